"""What ftlab prints to the console, and what it keeps libraries from printing there.

A run's console is the header, one progress bar and the summary line (``ftlab.training.progress``);
library lines that ftlab causes and that say nothing a user can act on are filtered here, by the
logger or warning they come from. ``FTLAB_VERBOSE=1`` (or Hydra's ``hydra.verbose``) brings them
all back.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "FTLAB_VERBOSE"

#: library loggers with known-harmless lines at import or setup, and the level they are cut to.
#: bitsandbytes (imported by peft) warns on CPUs with AVX512-bf16 that its optional ``kernels``
#: package is missing, on every import, although ftlab runs no 4-bit CPU kernel.
QUIET_LOGGERS = {
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
}

#: (message regex, category) of warnings ftlab causes by design, filtered unless verbose
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = ()


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose(on: bool) -> None:
    """``hydra.verbose`` (and ``FTLAB_VERBOSE``) for this process and the processes it starts."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def quiet_known_noise() -> None:
    """Cut the known-harmless library lines (idempotent; a no-op when verbose)."""
    if verbose():
        return
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
