"""Typed references to config fields: a reference names a schema field or fails when made."""

from __future__ import annotations

import pytest

from ftlab.config.refs import RUN, Section, check_key
from ftlab.config.schema import CalibrationConfig, StageConfig


def test_a_reference_is_the_dotted_key_of_a_schema_field():
    assert RUN.seed == "seed"
    assert RUN.model.name_or_path == "model.name_or_path"
    assert RUN.task.format == "task.format"  # a field, not str.format
    calibration = RUN.sparsity.calibration
    assert isinstance(calibration, Section) and calibration.key == "sparsity.calibration"
    assert calibration.batches == "sparsity.calibration.batches"
    assert RUN.adapter == "adapter" and RUN.schedule.stages == "schedule.stages"  # free-form / list: leaves
    assert Section("", StageConfig).iters == "iters"


def test_a_misspelt_or_renamed_field_fails_naming_the_schema_and_its_fields():
    with pytest.raises(AttributeError, match=r"ModelConfig has no field 'name_or_pth' \(its fields: arch, "):
        RUN.model.name_or_pth  # noqa: B018
    with pytest.raises(AttributeError, match="CalibrationConfig has no field 'batch'"):
        RUN.sparsity.calibration.batch  # noqa: B018


def test_check_key_accepts_fields_and_keys_inside_free_form_nodes_only():
    for key in ("seed", "sparsity.sparsegpt", "sparsity.sparsegpt.blocksize", "sparsity.options.power",
                "task.options.digits", "model.config.hidden_size", "adapter.anything"):
        assert check_key(key) == key
    assert check_key("adapter.batches", {"adapter": (CalibrationConfig,)}) == "adapter.batches"
    for key, message in (("sparsity.levle", "'levle' is not a field of SparsityConfig"),
                         ("seed.x", "'seed' is a leaf"), ("train.betas.x", "'betas' is a leaf"),
                         ("sparsity.sparsegpt.block", "'block' is not a field of SparseGPTConfig"),
                         ("adapter.r", "'r' is not a field of CalibrationConfig")):
        with pytest.raises(ValueError, match=message):
            check_key(key, {"adapter": (CalibrationConfig,)})
