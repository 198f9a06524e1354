"""ftlab: Hydra-configured parameter-efficient fine-tuning of language models with Lightning."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (imported by peft whenever it is installed) logs a warning on import on CPUs with
# AVX512-BF16 that an optional faster nf4 kernel could not be fetched from the Hugging Face hub.
# Nothing is wrong (its own CPU kernels run), but the line lands on stderr of every ftlab command,
# including the one-line error contract; only errors from that module are shown.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
