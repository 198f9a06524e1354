"""ftlab: Hydra-configured parameter-efficient fine-tuning of language models with Lightning."""

__version__ = "0.1.0"
