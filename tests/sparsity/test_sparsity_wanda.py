"""Wanda as published: with no ``sparsity.group`` the comparison group is each output row and the
per-row count is ``int(cols * level)``, selected as the reference code does (stable sort of the
scores per row, the first ``int(cols * level)`` pruned)."""

from __future__ import annotations

from dataclasses import replace

import torch

from ftlab.preflight.compose import compose_run
from ftlab.sparsity.compute import masks_from_scores, spec_of


def reference_wanda_rows(metric: torch.Tensor, level: float) -> torch.Tensor:
    """locuslab/wanda lib/prune.py (prune_wanda, unstructured): keep-mask."""
    pruned = torch.zeros_like(metric, dtype=torch.bool)
    indices = torch.sort(metric, dim=-1, stable=True)[1][:, :int(metric.shape[1] * level)]
    pruned.scatter_(1, indices, True)
    return ~pruned


def test_default_group_is_row_for_wanda_only():
    wanda = spec_of(compose_run(["sparsity=unstructured", "sparsity.importance=wanda"]).sparsity)
    assert (wanda.group, wanda.row_floor) == ("row", True)
    layer = spec_of(compose_run(["sparsity=unstructured", "sparsity.importance=wanda", "sparsity.group=layer"]).sparsity)
    assert layer.group == "layer"
    assert spec_of(compose_run(["sparsity=unstructured"]).sparsity).group == "layer"  # magnitude: per layer


def test_rows_match_reference_selection():
    g = torch.Generator().manual_seed(0)
    scores = {"w": torch.rand(16, 100, generator=g)}
    scores["w"][:, :10] = 0.5  # ties, broken by position as in the reference's stable sort
    spec = spec_of(compose_run(["sparsity=unstructured", "sparsity.importance=wanda"]).sparsity)
    for level in (0.3, 0.555, 0.7, 0.9):  # 55.5 -> 55 (nearest would be 56)
        got = masks_from_scores(scores, replace(spec, level=level))["w"]
        assert torch.equal(got, reference_wanda_rows(scores["w"], level)), level
