"""The Qwen2.5 preset carries the published config of a model that exists.

There is no Qwen2.5-4B (the family is 0.5B, 1.5B, 3B, 7B, 14B, 32B, 72B): ``model=qwen2_5_4b``
(kept: experiments and sweeps name it) is the Qwen2.5-3B preset. Expected values: config.json of Qwen/Qwen2.5-3B.
"""

from __future__ import annotations

import pytest

from conftest import compose

QWEN2_5_3B = {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
              "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 32768,
              "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


@pytest.mark.parametrize("option", ["qwen2_5_3b", "qwen2_5_4b"])
def test_qwen2_5_preset_is_the_published_3b_config(option: str) -> None:
    from ftlab.models import build_model, count_parameters

    model_cfg = compose(f"model={option}").model
    assert model_cfg.name == option and model_cfg.name_or_path == "Qwen/Qwen2.5-3B"  # the option name, as for every option
    assert model_cfg.arch == "qwen2"
    assert dict(model_cfg.config) == QWEN2_5_3B
    model = build_model(model_cfg, device="meta")
    assert model.config.hidden_size // model.config.num_attention_heads == 128
    assert count_parameters(model) == pytest.approx(3.086e9, rel=1e-3)  # "3.09B" on the model card
