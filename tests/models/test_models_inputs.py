"""A causal-LM model type whose forward needs more than token ids is refused when the model is
built, in one line naming the key, the type and what it needs (``ftlab.models.inputs``)."""

from __future__ import annotations

import json

import pytest

from conftest import compose
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.models.inputs import EXTRA_INPUTS


@pytest.mark.parametrize("arch", ["xmod", "musicgen"])
def test_a_model_type_that_needs_extra_inputs_is_refused_in_one_line(arch: str) -> None:
    cfg = compose("model=tiny_llama")
    cfg.model.arch = arch  # as a config whose keys fit the type would give it (checked before the config)
    with pytest.raises(ConfigError) as err:
        build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    text = str(err.value)
    assert err.value.key == "model.arch" and f"'{arch}'" in text and EXTRA_INPUTS[arch] in text and "\n" not in text


def test_a_model_dir_of_such_a_type_is_refused_up_front_naming_its_config(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xmod"}))
    with pytest.raises(ConfigError) as err:  # at composition: the config checks build its meta model
        compose("model=tiny_llama", f"model.name_or_path={tmp_path}")
    assert err.value.key == f"{tmp_path}/config.json model_type" and "lang_ids" in str(err.value)
