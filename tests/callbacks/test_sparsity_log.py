"""``sparsity_log.csv`` (SparsityLog): a header naming every gated layer, one row every
``log_every_n_steps`` optimiser steps holding the gates' zero fractions after that step."""

from __future__ import annotations

import lightning as L
import pytest

from conftest import read_csv
from ftlab.callbacks.sparsity_log import COLUMNS, FILE, SparsityLog, gated_callbacks
from ftlab.callbacks.stage_metrics import StageMetrics
from tiny_training import tiny_fit, tiny_parts

# gates drawn from N(0, 1) and a large threshold: the gates die a few at a time, step after step
DYING = ["adapter=sora", "adapter.gate_init=normal", "adapter.sparse_lambda_2=0.15"]


class GateProbe(L.Callback):
    """The adapter's sparsities after every optimiser step, read from the gates directly."""

    def __init__(self):
        self.by_step: dict[int, tuple[float, dict[str, float]]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        gates = {n: layer.lora_gate.detach() for n, layer in pl_module.adapted.layers.items()}
        per_layer = {n: float((g == 0).float().mean()) for n, g in gates.items()}
        zeros = sum(int((g == 0).sum()) for g in gates.values())
        self.by_step[trainer.global_step] = (zeros / sum(g.numel() for g in gates.values()), per_layer)


def test_rows_hold_the_gate_sparsity_of_their_step(tmp_path):
    cfg, dm, module = tiny_parts(*DYING)
    probe = GateProbe()
    tiny_fit(cfg, dm, module, [probe, SparsityLog(tmp_path, every_n_steps=2)], max_steps=6)
    header, rows = read_csv(tmp_path / FILE)
    layers = module.adapted.layer_names()
    assert header == COLUMNS + layers and len(layers) == 14  # 2 blocks x q,k,v,o,gate,up,down
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    overall = [float(r["overall_sparsity"]) for r in rows]
    assert len(set(overall)) > 1  # gates died between the rows: the rows are not all alike
    for r in rows:
        want_overall, want_layers = probe.by_step[int(r["step"])]
        assert float(r["overall_sparsity"]) == pytest.approx(want_overall, abs=1e-6)
        assert {n: float(r[n]) for n in layers} == pytest.approx(want_layers, abs=1e-6)


def test_gated_callbacks_add_stage_metrics_only_under_stages(tmp_path):
    plain, *_ = tiny_parts("adapter=sora")
    staged, *_ = tiny_parts("adapter=sora", "schedule=stages", "schedule.stages=[{iters:2,lr:1e-3}]")
    assert [type(c) for c in gated_callbacks(plain, tmp_path)] == [SparsityLog]
    assert [type(c) for c in gated_callbacks(staged, tmp_path)] == [SparsityLog, StageMetrics]
