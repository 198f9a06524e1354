"""Pure gate math: the soft-threshold, the released quirk, folding, threshold schedules."""

from __future__ import annotations

import math

import pytest
import torch

from ftlab.adapters import gates as G

XI = 0.1

# (g, exact T_xi(g), released three-mask result)
CASES = [
    (0.0, 0.0, 0.0),
    (0.05, 0.0, 0.0),  # |g| < xi -> 0
    (-0.05, 0.0, 0.0),
    (0.1, 0.0, 0.1),  # |g| == xi: exact -> 0; the released masks leave it untouched
    (-0.1, 0.0, -0.1),
    (0.15, 0.05, 0.0),  # (xi, 2xi): exact shrinks by xi; released zeroes it (the quirk)
    (-0.15, -0.05, 0.0),
    (0.19, 0.09, 0.0),
    (0.25, 0.15, 0.15),  # > 2xi: both shrink by exactly xi
    (-0.25, -0.15, -0.15),
    (1.0, 0.9, 0.9),
    (-3.0, -2.9, -2.9),
]


@pytest.mark.parametrize(("g", "exact", "released"), CASES)
def test_threshold_table(g, exact, released):
    t = torch.tensor([g], dtype=torch.float64)
    assert G.soft_threshold(t, XI).item() == pytest.approx(exact, abs=1e-12)
    assert G.released_threshold(t, XI).item() == pytest.approx(released, abs=1e-12)
    assert G.proximal(t, XI, "exact").item() == pytest.approx(exact, abs=1e-12)
    assert G.proximal(t, XI, "released").item() == pytest.approx(released, abs=1e-12)


def test_soft_threshold_zeroes_exactly_and_shrinks_by_exactly_xi():
    g = torch.randn(10_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xi = 0.3
    out = G.soft_threshold(g, xi)
    small = g.abs() <= xi
    assert torch.all(out[small] == 0)  # exact zeros, not tiny values
    assert torch.allclose(g[~small].abs() - out[~small].abs(), torch.full_like(out[~small], xi), atol=1e-12)
    assert torch.equal(torch.sign(out[~small]), torch.sign(g[~small]))
    # the proximal operator of xi|g|: argmin_u 0.5 (u - g)^2 + xi |u|, checked on a grid
    u = torch.linspace(-4, 4, 80_001, dtype=torch.float64)
    for v in (-2.0, -0.31, -0.2, 0.0, 0.29, 0.5, 3.3):
        best = u[torch.argmin(0.5 * (u - v) ** 2 + xi * u.abs())].item()
        assert G.soft_threshold(torch.tensor([v], dtype=torch.float64), xi).item() == pytest.approx(best, abs=1e-4)


def test_released_quirk_zeroes_the_band_between_xi_and_two_xi():
    g = torch.tensor([0.11, 0.15, 0.199, 0.21, -0.11, -0.199, -0.21])
    out = G.released_threshold(g, XI)
    assert torch.equal(out[[0, 1, 2, 4, 5]], torch.zeros(5))
    assert torch.allclose(out[[3, 6]], torch.tensor([0.11, -0.11]), atol=1e-6)
    assert torch.equal(g, torch.tensor([0.11, 0.15, 0.199, 0.21, -0.11, -0.199, -0.21]))  # input untouched


def test_xi_zero_is_identity_and_negative_xi_is_refused():
    g = torch.randn(50)
    assert torch.equal(G.soft_threshold(g, 0.0), g)
    assert torch.equal(G.released_threshold(g, 0.0), g)
    with pytest.raises(ValueError):
        G.soft_threshold(g, -1e-3)
    with pytest.raises(ValueError):
        G.proximal(g, 0.1, "nope")


def test_fold_gates_drops_zero_ranks_and_keeps_the_product():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 10, generator=gen, dtype=torch.float64), torch.randn(7, 6, generator=gen, dtype=torch.float64)
    g = torch.tensor([0.5, 0.0, -1.2, 0.0, 0.0, 2.0], dtype=torch.float64)
    a2, b2 = G.fold_gates(a, b, g)
    assert a2.shape == (3, 10) and b2.shape == (7, 3)
    assert torch.allclose(b2 @ a2, b @ torch.diag(g) @ a, atol=1e-12)
    assert torch.allclose(G.gated_delta(a, b, g, 2.0), 2.0 * b @ torch.diag(g) @ a, atol=1e-12)
    a0, b0 = G.fold_gates(a, b, torch.zeros(6, dtype=torch.float64))
    assert a0.shape == (0, 10) and b0.shape == (7, 0)
    assert G.kept_ranks(g).tolist() == [0, 2, 5]


def test_zero_fraction_and_rank_params():
    assert G.zero_fraction(torch.tensor([0.0, 1.0, 0.0, -2.0])) == 0.5
    assert G.zero_fraction(torch.tensor([1e-30])) == 0.0  # only exact zeros count
    assert G.effective_rank_params(3, 128, 64) == 3 * 192
    assert G.effective_rank_params(0, 128, 64) == 0


def test_dora_merge_matches_definition():
    gen = torch.Generator().manual_seed(2)
    w, d = torch.randn(5, 8, generator=gen, dtype=torch.float64), torch.randn(5, 8, generator=gen, dtype=torch.float64)
    m = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    merged = G.dora_merge(w, d, m)
    v = w + d
    for i in range(5):
        assert torch.allclose(merged[i], m[i] * v[i] / math.sqrt(float((v[i] ** 2).sum())), atol=1e-12)
    assert torch.allclose(G.row_norm(merged), m, atol=1e-12)


def test_threshold_schedules():
    assert G.threshold_values("constant", 3e-4, 9.0, 4) == [3e-4] * 4
    lin = G.threshold_values("linear", 0.0, 7e-4, 8)
    assert lin == pytest.approx([i * 1e-4 for i in range(8)], abs=1e-15)
    assert lin[-1] == 7e-4
    geo = G.threshold_values("exp_linear", 1e-5, 1e-3, 3)
    assert geo == pytest.approx([1e-5, 1e-4, 1e-3], rel=1e-12)
    assert geo[0] == 1e-5 and geo[-1] == 1e-3
    loglin = G.threshold_values("log_linear", 0.0, 1.0, 3)
    assert loglin == pytest.approx([0.0, math.log((1 + math.e) / 2), 1.0], rel=1e-12)
    for kind in ("linear", "log_linear", "exp_linear"):
        v = G.threshold_values(kind, 1e-4, 7e-4, 7)
        assert v[0] == pytest.approx(1e-4) and v[-1] == pytest.approx(7e-4)
        assert all(x < y for x, y in zip(v, v[1:]))  # raises xi stage after stage
    assert G.threshold_values("linear", 0.2, 0.9, 1) == [0.2]
    with pytest.raises(ValueError):
        G.threshold_values("exp_linear", 0.0, 1e-3, 3)
    with pytest.raises(ValueError):
        G.threshold_values("cubic", 0.0, 1e-3, 3)
