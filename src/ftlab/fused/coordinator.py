"""The fused step: K trial threads hand in their micro-batches, one forward and one backward
serve them all.

Each trial trains in its own thread with its own Lightning trainer (its own loops, callbacks,
logs, checkpoints, optimiser, scheduler, clipping), so every file it writes comes from the code a
solo run uses. Its ``training_step`` calls :meth:`FusedStep.step`, which blocks until every
trial still in the group has handed in a batch; the group's one fused-step thread then runs the
concatenated forward (under the trial threads' autocast state), each trial's loss over its own tokens plus its adapter's regularisation, and one
backward of their sum (non-finite losses left out: that trial stops, the others' gradients do not
depend on it). A trial that finishes or fails calls :meth:`FusedStep.leave` and the group goes on
without it.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from ftlab.data.packing import model_inputs
from ftlab.fused.batch import concat_batches, trial_losses
from ftlab.fused.build import TrialAdapter
from ftlab.fused.layer import FusedState


class FusedStep:
    def __init__(self, model: torch.nn.Module, state: FusedState, trials: list[TrialAdapter], pad_id: int):
        self.model, self.state, self.trials, self.pad_id = model, state, trials, pad_id
        config = getattr(model, "config", None)
        self._attn = (getattr(config, "_attn_implementation", None), model.get_input_embeddings().weight.dtype)
        self.lock = threading.Condition()
        self.active = set(range(len(trials)))
        self._pending: dict[int, dict[str, torch.Tensor]] = {}
        self._results: dict[int, torch.Tensor | BaseException] = {}
        self._autocast: tuple[str, bool, torch.dtype] | None = None
        self._closed = False
        self.steps = 0  # fused forwards run
        # One thread runs every fused forward and backward (not whichever trial arrives last):
        # the batch's activations then come from one allocator arena, where the last trial's
        # thread put them in a different glibc arena each step (peak RSS of an 8-trial CPU group
        # 3.5 GB instead of 1.8 GB), and which thread computes no longer depends on timing.
        self._worker = threading.Thread(target=self._work, name="fused-step", daemon=True)
        self._worker.start()

    def step(self, trial: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Trial ``trial``'s task loss of this micro-batch (detached); its gradients are in place."""
        device = next(self.model.parameters()).device.type
        with self.lock:
            # autocast is per thread: the fused step runs under the trial thread's (Lightning's precision)
            self._autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
            self._pending[trial] = batch
            self.lock.notify_all()
            while trial not in self._results:
                self.lock.wait()
            out = self._results.pop(trial)
        if isinstance(out, BaseException):
            raise out
        return out

    def leave(self, trial: int) -> None:
        with self.lock:
            self.active.discard(trial)
            self._pending.pop(trial, None)
            self.lock.notify_all()

    def close(self) -> None:
        """Stop the fused-step thread (the group's trials have all left)."""
        with self.lock:
            self._closed = True
            self.lock.notify_all()
        self._worker.join()

    def _ready(self) -> bool:
        return bool(self._pending) and self.active.issubset(self._pending)

    def _work(self) -> None:
        device = next(self.model.parameters()).device
        if device.type == "cuda":  # the current device is per thread too
            torch.cuda.set_device(device)
        with self.lock:
            while True:
                while not self._closed and not self._ready():
                    self.lock.wait()
                if self._closed:
                    return
                device_type, enabled, dtype = self._autocast or (device.type, False, torch.float32)
                with torch.autocast(device_type, dtype=dtype, enabled=enabled):
                    self._run_if_ready()

    def set_rng(self, trial: int, state: torch.Tensor) -> None:
        with self.lock:
            self.state.rng[trial] = state

    def rng(self, trial: int) -> torch.Tensor | None:
        with self.lock:
            return self.state.rng[trial]

    def _run_if_ready(self) -> None:
        if not self._pending or not self.active.issubset(self._pending):
            return
        batches = [self._pending.get(k) for k in range(len(self.trials))]
        self._pending = {}
        try:
            losses = self.forward_backward(batches)
            for k, loss in enumerate(losses):
                if loss is not None:
                    self._results[k] = loss
        except Exception as err:  # noqa: BLE001 - handed to every waiting trial, which raises it in its own thread
            for k, b in enumerate(batches):
                if b is not None:
                    self._results[k] = err
        self.lock.notify_all()

    def forward_backward(self, batches: list[dict[str, torch.Tensor] | None]) -> list[torch.Tensor | None]:
        """One fused forward and backward of every trial's batch (``None``: no rows); per trial
        its detached task loss. Gradients accumulate on the trials' tensors."""
        batch, self.state.rows, self.state.widths = concat_batches(batches, self.pad_id)
        inputs = model_inputs(batch, *self._attn)
        labels = inputs.pop("labels")
        with torch.enable_grad():  # trial threads run training_step with grad on; be explicit here
            logits = self.model(**inputs).logits
            losses = trial_losses(logits, labels, self.state.rows)
            total: Any = 0
            for k, loss in enumerate(losses):
                if loss is None or not torch.isfinite(loss):
                    continue
                reg = self.trials[k].adapted.regularization()
                total = total + (loss if reg is None else loss + reg)
            if torch.is_tensor(total):
                total.backward()
        self.steps += 1
        return [None if loss is None else loss.detach() for loss in losses]
