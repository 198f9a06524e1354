"""``docs/config.md`` is generated from the schema fields and must be current; every schema field
has its documentation next to it (``knob(doc=...)``)."""

from __future__ import annotations

import dataclasses
import typing

from conftest import ROOT
from ftlab.config import schema
from ftlab.config.fields import rules
from ftlab.preflight.reference import render


def test_config_page_is_current():
    page = ROOT / "docs" / "config.md"
    assert page.read_text() == render(), "docs/config.md is stale: run python scripts/config_reference.py"


def test_every_schema_field_is_documented_and_listed():
    text = render()
    for cls in (schema.RunConfig, schema.ModelConfig, schema.TrainConfig, schema.ScheduleConfig,
                schema.StageConfig, schema.HardwareConfig, schema.TaskConfig, schema.SparsityConfig):
        for f in dataclasses.fields(cls):
            assert rules(f)["doc"], f"{cls.__name__}.{f.name} has no doc"
    for key in ("`train.betas`", "`schedule.stages[i].lr`", "`sparsity.calibration.batches`", "`adapter.r`"):
        assert key in text
    assert "| `schedule.lr` | `float` | `0.001` | a number > 0; finite |" in text
    assert typing.get_type_hints(schema.RunConfig)  # the page resolves every annotation
