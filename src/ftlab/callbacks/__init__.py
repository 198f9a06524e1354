"""Thin Lightning callbacks that write the run files of DESIGN.md section 4."""

from ftlab.callbacks.checkpoints import PeriodicCheckpoint, find_latest_checkpoint
from ftlab.callbacks.history import TrainingHistory
from ftlab.callbacks.loss_log import LossLog

__all__ = ["LossLog", "PeriodicCheckpoint", "TrainingHistory", "find_latest_checkpoint"]
