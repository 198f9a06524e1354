"""Time and memory estimates for one planned run from prior runs (pure functions).

Time: a prior run on the same model, hardware and batch size gives seconds per optimiser step
directly. Priors of the same setup at two or more other batch sizes fit ``overhead + cost x
samples``. Otherwise the most similar prior on the same kind of accelerator (closest in tokens
per step) is scaled by parameter count x tokens per step (training cost ~ 6 * params * tokens).
No prior on that accelerator = no basis, said so, and left out of totals rather than guessed.

Memory: peak memory is modelled as ``fixed + per_sample * batch_size`` (weights and optimiser
state, plus activations per sequence). Two or more prior batch sizes fit both terms; one prior
fixes the slope against the meta-device ``fixed``; none falls back to an analytic activation
estimate. The recommended batch size fills ``safety_factor`` of the device memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ftlab.plan.priors import Prior, RunSetup

#: similarity weights used to pick the prior a scaled estimate starts from
WEIGHTS = {"hardware": 8, "model": 4, "adapter": 2, "task": 1}


@dataclass(frozen=True)
class RunFacts(RunSetup):
    total_params: int
    memory_mode: str = ""  # ftlab.adapters.params.memory_mode: dtype, quantisation, checkpointing


@dataclass
class TimeEstimate:
    sec_per_step: float | None
    method: str  # exact | fit | scaled | none
    basis: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def has_basis(self) -> bool:
        return self.sec_per_step is not None


@dataclass
class MemoryEstimate:
    peak_mb: float
    fixed_mb: float
    per_sample_mb: float
    method: str  # fit | one-point | analytic
    basis: list[str] = field(default_factory=list)
    device_mb: float | None = None
    safety_factor: float = 0.65
    max_batch_size: int | None = None  # None: device memory unknown
    sharding: str = ""  # how weights/optimiser state are split over devices (FSDP), for the report

    @property
    def fits(self) -> bool | None:
        if self.device_mb is None:
            return None
        return self.peak_mb <= self.safety_factor * self.device_mb


#: what a prior shares with a run that ran on the same hardware
HARDWARE_KEYS = ("hardware", "devices", "precision")
#: ... and with one of the same setup: everything but the batch size (the throughput benchmark's runs)
SETUP_KEYS = (*HARDWARE_KEYS, "model", "adapter", "task", "max_length")


def agree(run: RunSetup, p: RunSetup, keys: tuple[str, ...]) -> bool:
    """The one way a prior is matched to a run: the named facts are equal."""
    return all(getattr(p, k) == getattr(run, k) for k in keys)


def same_hardware(run: RunFacts, p: Prior) -> bool:
    return agree(run, p, HARDWARE_KEYS)


def same_setup(run: RunFacts, p: Prior) -> bool:
    return agree(run, p, SETUP_KEYS)


def exact_match(run: RunFacts, p: Prior) -> bool:
    return agree(run, p, (*SETUP_KEYS, "batch_size", "accumulate"))


def similarity(run: RunFacts, p: Prior) -> int:
    return (WEIGHTS["hardware"] * same_hardware(run, p) + WEIGHTS["model"] * (p.model == run.model)
            + WEIGHTS["adapter"] * (p.adapter == run.adapter) + WEIGHTS["task"] * (p.task == run.task))


def tokens_per_step(batch_size: int, accumulate: int, tokens_per_sample: float) -> float:
    """Tokens each device processes per optimiser step (devices work in parallel)."""
    return batch_size * accumulate * tokens_per_sample


def run_tokens_per_sample(run: RunFacts, p: Prior) -> float:
    """The prior's measured tokens per sample, rescaled by ``max_length`` for another task or
    length (same fill ratio)."""
    assert p.tokens_per_sample is not None
    if (p.task, p.max_length) == (run.task, run.max_length) or not p.max_length:
        return p.tokens_per_sample
    return p.tokens_per_sample / p.max_length * run.max_length


def scaled_sec_per_step(run: RunFacts, p: Prior) -> float:
    t_run = tokens_per_step(run.batch_size, run.accumulate, run_tokens_per_sample(run, p))
    t_prior = tokens_per_step(p.batch_size, p.accumulate, p.tokens_per_sample or 1.0)
    return p.sec_per_step * (run.total_params / p.total_params) * (t_run / t_prior)


def estimate_time(run: RunFacts, priors: list[Prior]) -> TimeEstimate:
    exact = [p for p in priors if exact_match(run, p)]
    if exact:
        sec = sum(p.train_time_s for p in exact) / sum(p.steps for p in exact)
        return TimeEstimate(sec, "exact", [p.path for p in exact],
                            f"measured on {len(exact)} identical-setup run(s)")
    setup = [p for p in priors if same_setup(run, p)]
    if len({p.samples_per_step for p in setup}) >= 2:
        # seconds per step = overhead + cost per sample, fitted over the measured batch sizes
        a, b = fit_line([(p.batch_size * p.accumulate, p.sec_per_step) for p in setup])
        if b > 0:
            sec = max(a, 0.0) + b * run.batch_size * run.accumulate
            return TimeEstimate(sec, "fit", [p.path for p in setup],
                                f"s/step = {max(a, 0.0):.3g} + {b:.3g} x samples, fitted over batch sizes "
                                f"{sorted({p.batch_size for p in setup})}")
    usable = [p for p in priors if p.accelerator == run.accelerator and p.total_params and p.tokens_per_sample]
    if not usable or not run.total_params:
        return TimeEstimate(None, "none", [], f"no finished prior run on accelerator={run.accelerator}")
    best = max(similarity(run, p) for p in usable)
    tied = [p for p in usable if similarity(run, p) == best]

    def distance(p: Prior) -> float:  # how far the scaling reaches: log ratio of tokens per step
        t_run = tokens_per_step(run.batch_size, run.accumulate, run_tokens_per_sample(run, p))
        return abs(math.log(t_run / tokens_per_step(p.batch_size, p.accumulate, p.tokens_per_sample or 1.0)))

    closest = min(distance(p) for p in tied)
    chosen = [p for p in tied if distance(p) == closest]
    values = sorted(scaled_sec_per_step(run, p) for p in chosen)
    sec = values[len(values) // 2]
    p0 = chosen[0]
    note = (f"scaled by params x tokens/step from the closest similar run "
            f"({p0.model}/{p0.hardware}/{p0.adapter}/bs{p0.batch_size}: x{sec / p0.sec_per_step:.3g})")
    return TimeEstimate(sec, "scaled", [p.path for p in chosen], note)


def memory_match(run: RunFacts, p: Prior) -> bool:
    return p.peak_memory_mb is not None and agree(run, p, (*SETUP_KEYS, "memory_mode"))


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b*x``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def estimate_memory(run: RunFacts, priors: list[Prior], static_mb: float, analytic_per_sample_mb: float,
                    device_mb: float | None, safety_factor: float) -> MemoryEstimate:
    matches = [p for p in priors if memory_match(run, p)]
    by_bs: dict[int, float] = {}
    for p in matches:
        by_bs[p.batch_size] = max(by_bs.get(p.batch_size, 0.0), float(p.peak_memory_mb))
    fixed, per_sample, method = static_mb, analytic_per_sample_mb, "analytic"
    if len(by_bs) >= 2:
        a, b = fit_line(sorted(by_bs.items()))
        if b > 0:
            fixed, per_sample, method = max(a, 0.0), b, "fit"
    if method == "analytic" and by_bs:
        bs, peak = max(by_bs.items())
        if peak > static_mb:
            fixed, per_sample, method = static_mb, (peak - static_mb) / bs, "one-point"
    est = MemoryEstimate(fixed + per_sample * run.batch_size, fixed, per_sample, method,
                         [p.path for p in matches] if method != "analytic" else [], device_mb, safety_factor)
    if device_mb is not None and per_sample > 0:
        est.max_batch_size = max(0, math.floor((safety_factor * device_mb - fixed) / per_sample))
    return est
