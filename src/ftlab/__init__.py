"""ftlab: Hydra-configured parameter-efficient fine-tuning of language models with Lightning."""

from ftlab.core.console import quiet_known_noise

__version__ = "0.1.0"

quiet_known_noise()  # before any entry point imports peft/bitsandbytes (stdlib only: cheap)
