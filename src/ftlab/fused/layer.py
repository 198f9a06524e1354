"""One frozen linear, K trials' low-rank updates: ``y[rows_k] = W x[rows_k] + s_k B_k(g_k * A_k(drop_k(x[rows_k])))``.

peft has a mixed-batch forward (``adapter_names=``) but refuses it in training mode, and its
adapters of one model share one dropout RNG; the fused layer is the training counterpart. The
arithmetic of a slot is that of peft's LoRA layer and of ftlab's SoRA layer (input cast to the
adapter dtype, update cast back to the base output's dtype), so trial k's rows see the same
operations as in its solo run.

Dropout: a solo run draws its LoRA dropout masks from the process RNG, layer after layer. Each
trial here keeps its own RNG state (:class:`FusedState`) and draws its masks from a private
generator holding that state, so on CPU its masks are the ones its solo run would draw from the
same starting state. The process RNG is never swapped: the trials' Trainers run in threads and
read or save-and-restore it (sampler seeds, Lightning's ``isolate_rng``) at moments no trial
controls, and a swap seen by another thread would move one trial's masks into another's stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class FusedState:
    """What every fused layer of one model reads per step: the rows of each trial in the
    concatenated batch (0 for a trial that has left the group), each trial's own sequence width
    (its solo batch's; the concatenated batch is padded to the widest) and RNG state."""

    def __init__(self, trials: int):
        self.rows: list[int] = [0] * trials
        self.widths: list[int] = [0] * trials
        self.rng: list[torch.Tensor | None] = [None] * trials

    @property
    def trials(self) -> int:
        return len(self.rows)


@contextlib.contextmanager
def trial_generator(state: FusedState, trial: int, device: torch.device) -> Iterator[torch.Generator]:
    """A generator of ``device`` on ``trial``'s own stream; its state is stored back afterwards.

    The stream starts from the state the recipe captured (a CPU generator's). On CUDA that state
    cannot be loaded into a CUDA generator, so the CUDA stream is seeded from the trial's CPU
    stream: still the trial's own and reproducible, but not its solo run's masks."""
    gen = torch.Generator(device=device)
    own = state.rng[trial]
    if own is None:
        raise RuntimeError(f"fused trial {trial} has no RNG state: the recipe sets one per trial before training")
    if own.numel() == gen.get_state().numel():
        gen.set_state(own)
    else:
        gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=torch.Generator().set_state(own))))
    yield gen
    state.rng[trial] = gen.get_state()


def dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``F.dropout(x, p, training=True)`` drawn from ``generator``: on CPU torch draws the same
    Bernoulli noise from the process RNG, scales it by ``1/(1-p)`` and multiplies, so from equal
    generator states the two agree bit for bit."""
    if p >= 1:
        return x * torch.zeros_like(x)
    noise = torch.empty_like(x).bernoulli_(1 - p, generator=generator)
    noise.div_(1 - p)
    return x * noise


class LowRankSlot(nn.Module):
    """One trial's update of one linear; holds (does not copy) the trial's own A, B, gate and
    dropout modules, so the trial's optimiser, prox step and export see the same tensors."""

    def __init__(self, lora_A: nn.Linear, lora_B: nn.Linear, scaling: float, dropout: nn.Module,
                 gate: nn.Parameter | None = None, *, add_then_cast: bool = False):
        super().__init__()
        self.lora_A, self.lora_B, self.lora_dropout = lora_A, lora_B, dropout
        self.lora_gate = gate
        self.scaling = float(scaling)
        #: peft adds the adapter-dtype update to the base output and casts the sum back
        #: (``add_then_cast``); ftlab's gated layers cast the update first. On a half-precision
        #: base the two round differently, so each slot keeps its family's order.
        self.add_then_cast = add_then_cast

    @property
    def draws(self) -> bool:
        """True when the forward draws random numbers (dropout in training mode)."""
        return self.training and not isinstance(self.lora_dropout, nn.Identity) and self.lora_dropout.p > 0

    def add(self, base: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``base`` (the frozen product of these rows) plus this trial's update of ``x``; dropout
        draws from ``generator`` when one is given (see the module docstring)."""
        update = self(x, generator)
        if self.add_then_cast:
            return (base + update).to(base.dtype)
        return base + update.to(base.dtype)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.to(self.lora_A.weight.dtype)
        x = dropout(x, self.lora_dropout.p, generator) if generator is not None and self.draws else self.lora_dropout(x)
        h = self.lora_A(x)
        if self.lora_gate is not None:
            h = h * self.lora_gate
        return self.lora_B(h) * self.scaling


class FusedLowRankLinear(nn.Module):
    """A frozen ``base_layer`` shared by the trials in ``slots`` (trial index -> slot); rows of a
    trial without a slot here (it does not target this linear) get the frozen product only."""

    def __init__(self, base_layer: nn.Module, slots: dict[int, LowRankSlot], state: FusedState):
        super().__init__()
        self.base_layer = base_layer
        self.slots = nn.ModuleDict({str(k): s for k, s in slots.items()})
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.state.rows
        if x.shape[0] != sum(rows):
            raise RuntimeError(f"fused layer got {x.shape[0]} rows, the trials hold {rows}")
        result = self.base_layer(x)  # the frozen product, once for every trial
        present = [k for k, n in enumerate(rows) if n]
        # split, not one slice per trial: a slice's backward writes its gradient into a zero
        # tensor of the whole batch's shape (K of them per layer, summed), split's backward
        # concatenates the K row blocks once
        sizes = [rows[k] for k in present]
        xs, bases = x.split(sizes), result.split(sizes)
        pieces = []
        for k, x_k, base in zip(present, xs, bases):
            slot = self.slots[str(k)] if str(k) in self.slots else None
            pieces.append(base if slot is None else self._trial_rows(slot, k, base, x_k))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def _trial_rows(self, slot: LowRankSlot, k: int, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Trial k's rows over its own width only: its dropout then draws the mask of its solo
        batch's shape (the columns beyond are padding, left at the frozen product)."""
        width = self.state.widths[k]
        cut = x.dim() == 3 and 0 < width < x.shape[1]
        x_k, base_k = (x[:, :width], base[:, :width]) if cut else (x, base)
        if slot.draws:
            with trial_generator(self.state, k, x.device) as gen:
                out = slot.add(base_k, x_k, gen)
        else:
            out = slot.add(base_k, x_k)
        return torch.cat([out, base[:, width:]], dim=1) if cut else out
