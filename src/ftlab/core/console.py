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

#: (message regex, category) of warnings ftlab causes by design, filtered unless verbose:
#: the frozen base model is in eval mode on purpose (dropout off in the base); transformers
#: deprecates a property Lightning/peft still read; Lightning deprecates a torch pytree API it
#: uses itself.
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"Found \d+ module\(s\) in eval mode at the start of training", Warning),
    (r".*`is_gradient_checkpointing` is deprecated", FutureWarning),
    (r".*`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    # FtlabModule counts tokens on the host before the transfer; TaskDataModule has no such hook
    (r".*overridden `on_before_batch_transfer` in `LightningModule`", Warning),
    # a local run on a machine with a SLURM client (a login node): ftlab's SLURM jobs are started
    # by submitit inside the allocation, so a run outside srun is meant to be local
    (r"The `srun` command is available on your system but is not used", Warning),
)

#: Lightning's loggers: they add their own stream handler when imported before logging is
#: configured (every line then printed by it and by Hydra's root handler); a run routes them
#: through the root handlers once. Their INFO lines (GPU/TPU availability, tips, "max_steps
#: reached") go to the run's log file; the console shows them only when verbose.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")


HELP_FLAGS = ("-h", "--help")


def help_requested(argv: list[str], doc: str | None) -> bool:
    """Print ``doc`` and return True when ``argv`` asks for -h/--help.

    Every ``python -m ftlab.<tool>`` answers help this one way, before it parses anything, so that
    help works even beside a bad argument and loads nothing heavy.
    """
    if not set(HELP_FLAGS) & set(argv):
        return False
    print(doc)
    return True


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


def route_library_loggers() -> None:
    """Each library line at most once: Lightning's loggers lose their own handlers and propagate
    to the root handlers (console and the run's log file)."""
    for name in LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                lg.removeHandler(handler)
        lg.propagate = True


def quiet_progress_bars(verbose_on: bool) -> None:
    """transformers' "Writing model shards" bars (one per export) are the only other bars."""
    from transformers.utils import logging as hf_logging  # heavy: only once a run configures its console

    if verbose_on:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


def configure_run_console(hydra_verbose: bool = False) -> bool:
    """Called once a run's logging is configured (Hydra's job logging); returns whether verbose."""
    set_verbose(hydra_verbose)
    on = verbose()
    # a log file on a full disk: logging would print a traceback per line; the write that fails
    # next (a checkpoint, a CSV row) ends the run with one line naming its path
    logging.raiseExceptions = False
    logging.captureWarnings(True)  # warnings.warn (Lightning's rank_zero_warn ...) into the log, filtered
    if not on:
        quiet_known_noise()
    route_library_loggers()
    quiet_progress_bars(on)
    return on


class ConsoleFilter(logging.Filter):
    """The console's share of the log: ftlab's own lines and library errors; library warnings and
    INFO lines (Python warnings included, captured into ``py.warnings``) only when verbose. The
    run's log file has them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".")[0] == "ftlab" or verbose()


class ConsoleFormatter(logging.Formatter):
    """ftlab's INFO lines as they are; everything else with its level and logger name."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.name.split(".")[0] == "ftlab" and record.levelno == logging.INFO:
            return text
        return f"{record.levelname.lower()} ({record.name}): {text}"
