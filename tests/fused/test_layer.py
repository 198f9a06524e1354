"""The fused layer's dropout: a trial's masks come from its own stream, equal to the masks its
solo run draws from the process RNG, and untouched by other threads using the process RNG."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from ftlab.fused.layer import FusedState, dropout, trial_generator


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_dropout_from_a_generator_equals_torch_dropout_from_the_same_state(p):
    x = torch.randn(3, 9, 17)
    torch.manual_seed(7)
    want = F.dropout(x, p, training=True)
    after = torch.get_rng_state()
    torch.manual_seed(7)
    gen = torch.Generator().set_state(torch.get_rng_state())
    assert torch.equal(dropout(x, p, gen), want)
    assert torch.equal(gen.get_state(), after)  # the stream moved as far as the solo run's


def test_dropout_of_one_zeroes_everything():
    assert torch.equal(dropout(torch.ones(4), 1.0, torch.Generator()), torch.zeros(4))


def masks(state: FusedState, trial: int, draws: int) -> list[torch.Tensor]:
    out = []
    for _ in range(draws):
        with trial_generator(state, trial, torch.device("cpu")) as gen:
            out.append(dropout(torch.ones(64), 0.5, gen))
    return out


def test_trial_streams_ignore_the_process_rng_and_other_threads():
    torch.manual_seed(1)
    start = torch.get_rng_state()
    quiet = FusedState(2)
    quiet.rng = [start.clone(), start.clone()]
    want = masks(quiet, 0, 20)

    busy = FusedState(2)
    busy.rng = [start.clone(), start.clone()]
    stop = threading.Event()

    def churn():  # another trial's Trainer: draws and save-restores the process RNG meanwhile
        while not stop.is_set():
            saved = torch.get_rng_state()
            torch.rand(100)
            torch.set_rng_state(saved)
            torch.rand(3)

    th = threading.Thread(target=churn)
    th.start()
    try:
        got = masks(busy, 0, 20)
    finally:
        stop.set()
        th.join()
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(busy.rng[1], start)  # the other trial's stream did not move


def test_a_trial_without_a_state_is_refused():
    with pytest.raises(RuntimeError, match="trial 1 has no RNG state"):
        with trial_generator(FusedState(2), 1, torch.device("cpu")):
            pass
