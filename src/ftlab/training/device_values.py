"""Scalars that stay on the device until the host needs them.

Reading a CUDA tensor on the host (``.item()``, ``float()``, ``.tolist()``) waits for every queued
kernel: done once per training step it stalls the GPU between steps. The training loop therefore
appends detached loss tensors here and reads them only where a number is written (a
``loss_log.csv`` row every ``log_every_n_steps``, an epoch's history row, a checkpoint): one
transfer for the whole window instead of one per step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class DeviceScalars:
    """An append-only list of scalars; ``append`` never synchronises, ``values`` transfers once.

    Values are copied to the host as float32 -> Python float, exactly what ``.item()`` of each
    would give, so logs computed from them are byte-identical to per-step reads. Appended tensors
    are stacked every ``CHUNK`` values (a device op), so a long epoch holds a few blocks rather
    than one small allocation per step.
    """

    CHUNK = 1024

    def __init__(self, values: Iterable[float] = ()):
        self._host: list[float] = [float(v) for v in values]
        self._blocks: list[torch.Tensor] = []
        self._tail: list[torch.Tensor] = []

    def append(self, value: torch.Tensor) -> None:
        self._tail.append(value.detach().reshape(()).float())
        if len(self._tail) >= self.CHUNK:
            self._blocks.append(torch.stack(self._tail))
            self._tail = []

    def values(self) -> list[float]:
        """All values as Python floats (one device-to-host transfer for whatever is pending)."""
        pending = self._blocks + ([torch.stack(self._tail)] if self._tail else [])
        if pending:
            self._host.extend(torch.cat(pending).tolist())
            self._blocks, self._tail = [], []
        return self._host

    def __len__(self) -> int:
        return len(self._host) + sum(len(b) for b in self._blocks) + len(self._tail)


def group_means(values: list[float], counts: list[int]) -> list[float]:
    """Mean of each consecutive group of ``counts[k]`` values (an empty group counts as 0.0)."""
    means, at = [], 0
    for n in counts:
        group = values[at:at + n]
        means.append(sum(group) / max(1, len(group)))
        at += n
    return means
