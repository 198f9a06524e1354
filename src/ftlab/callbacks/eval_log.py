"""``eval_log.csv``: one row per evaluation during training (``eval.every_n_steps``).

Each validation pass of the fit (the module logs ``val_loss`` on the val split) is followed by
the benchmark subset of ``eval.during_training`` scored by lm-eval (``scorer``: name -> headline
value, given by the recipe so that this package does not import lm-eval). The values go to
``eval_log.csv``, to ``trainer.callback_metrics`` as ``eval/<task>`` (what ``train.early_stopping``
and the best-state tracker read) and the benchmark values to every configured tracker (``trainer.loggers``; ``val_loss`` reaches
them from the module).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from ftlab.io import CsvAppender

Scorer = Callable[[torch.nn.Module, object], dict[str, float]]  # (model, tokenizer) -> task: value


def metric_name(task: str) -> str:
    return f"eval/{task}"


class EvalLog(L.Callback):
    def __init__(self, run_dir: Path, tasks: list[str], scorer: Scorer | None):
        self.tasks, self.scorer = list(tasks), scorer
        self.csv = CsvAppender(Path(run_dir) / "eval_log.csv", ["epoch", "step", "val_loss",
                                                                 *[metric_name(t) for t in self.tasks]])

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.csv.open(keep_until_step=trainer.global_step if trainer.global_step else None)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.training and trainer.state.fn != "fit":
            return
        values: dict[str, float] = {}
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            values["val_loss"] = float(val)
        if self.scorer is not None and self.tasks:
            for task, value in self.scorer(pl_module.model, trainer.datamodule.tokenizer).items():
                values[metric_name(task)] = float(value)
                trainer.callback_metrics[metric_name(task)] = torch.tensor(float(value))
        scores = {k: v for k, v in values.items() if k != "val_loss"}  # val_loss: the module logs it
        if scores:
            for logger in trainer.loggers:
                logger.log_metrics(scores, step=trainer.global_step)
        if trainer.is_global_zero:
            self.csv.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                             **{k: f"{v:.6f}" for k, v in values.items()}})


__all__ = ["EvalLog", "Scorer", "metric_name"]
