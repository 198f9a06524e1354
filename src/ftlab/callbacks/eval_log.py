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

from ftlab.core.io import CsvAppender

Scorer = Callable[[torch.nn.Module, object], dict[str, float]]  # (model, tokenizer) -> task: value


def metric_name(task: str) -> str:
    return f"eval/{task}"


class EvalLog(L.Callback):
    def __init__(self, run_dir: Path, tasks: list[str], scorer: Scorer | None):
        self.tasks, self.scorer = list(tasks), scorer
        self.evaluated_step = -1  # the step of the last evaluation logged (travels in checkpoints)
        self.csv = CsvAppender(Path(run_dir) / "eval_log.csv", ["epoch", "step", "val_loss",
                                                                 *[metric_name(t) for t in self.tasks]])

    def on_train_start(self, trainer, pl_module) -> None:
        missed = self.missed_evaluation(trainer)
        if trainer.is_global_zero:  # a missed evaluation's row (if the crashed run wrote one) is written again
            step = trainer.global_step - 1 if missed else trainer.global_step
            self.csv.open(keep_until_step=step if trainer.global_step else None)
        if missed:
            self.run_missed_evaluation(trainer)

    @staticmethod
    def evaluation_due(trainer) -> bool:
        """Lightning validates after the batch that completes every ``val_check_batch`` batches."""
        done = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        every = trainer.val_check_batch
        return isinstance(every, int) and every > 0 and done > 0 and done % every == 0

    def missed_evaluation(self, trainer) -> bool:
        """Resumed from a checkpoint written at an evaluation step, before that evaluation ran (a
        checkpoint is written at the end of its step so that a crash inside the evaluation loses no
        training): Lightning resumes with the next batch and would skip it, so the patience
        counters and the best state would differ from an uninterrupted run's."""
        loop = trainer.fit_loop.epoch_loop
        return (trainer.global_step > 0 and self.evaluated_step < trainer.global_step and self.evaluation_due(trainer)
                and not loop.val_loop.restarted_mid_evaluation)  # Lightning finishes that one itself

    @staticmethod
    def run_missed_evaluation(trainer) -> None:
        """The validation Lightning's epoch loop runs after a batch (its ``on_advance_end``), now."""
        loop = trainer.fit_loop.epoch_loop
        trainer.validating = True
        loop.val_loop.restarting = False
        loop.val_loop.run()
        trainer.training = True

    def state_dict(self) -> dict:
        return {"evaluated_step": int(self.evaluated_step)}

    def load_state_dict(self, state: dict) -> None:
        self.evaluated_step = int(state.get("evaluated_step", -1))

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
        self.evaluated_step = trainer.global_step
        if trainer.is_global_zero:
            self.csv.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                             **{k: f"{v:.6f}" for k, v in values.items()}})


__all__ = ["EvalLog", "Scorer", "metric_name"]
