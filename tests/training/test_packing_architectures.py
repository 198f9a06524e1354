"""Every causal-LM architecture of the installed transformers packs exactly or refuses
``train.packing=true`` in one line: no third outcome (``ftlab.training.packing_matrix``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers.utils import logging as hf_logging

from ftlab.training.packing_matrix import (
    WINDOW,
    architectures,
    build_tiny,
    outcome,
    per_layer_lists,
    render_table,
    replace_table,
    tiny_config,
)

README = Path(__file__).resolve().parents[2] / "README.md"

#: model types without a tiny CPU build, and why (a substring of the error): Gemma-3n's vision tower
#: needs timm (which needs torchvision, not a dependency of ftlab). None is a packing result. The set
#: must match exactly, so a transformers release that adds or fixes one shows here.
NOT_BUILT = {
    'gemma3n': 'ImportError: `pip install timm`',
}
#: model types ftlab refuses as models (``ftlab.models.inputs``): their forward needs more than token ids
UNSUPPORTED = {"xmod", "musicgen", "musicgen_melody", "gemma4_assistant", "gemma4_unified_assistant"}
#: hybrids whose tiny config now holds an attention layer besides a linear/recurrent one: refused
#: (their recurrent state runs across packed examples), where before their two tiny layers had no
#: attention and did not build
HYBRIDS = ("qwen3_next", "qwen3_5", "jamba", "bamba", "zamba2", "granitemoehybrid", "recurrent_gemma")

#: families with sliding-window or chunked layers: each packs exactly with a window of WINDOW tokens
WINDOWED = ("mistral", "mixtral", "qwen2", "starcoder2", "gemma2", "gemma3", "gemma3_text", "cohere2", "llama4_text", "phi3",
            "gpt_neo")


@pytest.fixture(scope="module")
def outcomes():
    hf_logging.set_verbosity_error()
    return {t: outcome(t) for t in architectures()}


@pytest.mark.slow
def test_every_architecture_packs_exactly_or_refuses_in_one_line(outcomes) -> None:
    wrong = {t: o.detail for t, o in outcomes.items() if o.status == "WRONG"}
    assert not wrong, f"packed losses differ from alone without a refusal: {wrong}"
    for t, o in outcomes.items():
        assert o.status in ("packs", "refused", "unsupported", "not built"), (t, o)
        if o.status == "packs":
            assert o.difference is not None and o.difference <= 1e-5, (t, o)
        if o.status == "refused":
            assert o.detail.startswith("train.packing=True is invalid: false for ") and "\n" not in o.detail, (t, o)
        if o.status == "unsupported":
            assert o.detail.startswith(f"model.arch='{t}' is invalid: ") and "\n" not in o.detail, (t, o)
    assert {t for t, o in outcomes.items() if o.status == "unsupported"} == UNSUPPORTED
    not_built = {t: o.detail for t, o in outcomes.items() if o.status == "not built"}
    assert set(not_built) == set(NOT_BUILT), sorted(set(not_built) ^ set(NOT_BUILT))
    for t, reason in NOT_BUILT.items():
        assert reason in not_built[t], (t, not_built[t])
    assert all(outcomes[t].status == "packs" for t in WINDOWED), {t: outcomes[t].detail for t in WINDOWED}
    assert outcomes["bloom"].status == "refused"  # ALiBi from a 2-D padding mask
    assert outcomes["mpt"].status == "packs"  # ALiBi is relative: exact under the block mask
    # built at sizes their configs and kernels accept (packing_matrix.OVERRIDES), both are refused in one line
    assert outcomes["prophetnet"].status == outcomes["xlstm"].status == "refused"
    assert all(outcomes[t].status == "refused" for t in HYBRIDS), {t: outcomes[t].detail for t in HYBRIDS}


@pytest.mark.slow
def test_readme_architectures_table_is_current(outcomes) -> None:
    readme = README.read_text()
    table = render_table(list(outcomes.values()))
    assert replace_table(readme, table) == readme, "run: python scripts/architecture_table.py"


def test_windowed_tiny_models_have_a_window_shorter_than_the_examples() -> None:
    model, attn = build_tiny("gemma2")
    assert model is not None and attn == "eager"  # Gemma-2 has no sdpa path
    text = model.config.get_text_config()
    assert text.sliding_window == WINDOW and "sliding_attention" in text.layer_types
    model, _ = build_tiny("mistral")
    assert model.config.sliding_window == WINDOW


def test_tiny_hybrids_and_per_layer_lists_keep_every_layer_kind() -> None:
    """The default's per-layer lists shrink to the tiny depth with every kind kept (a hybrid keeps
    an attention layer, a MoE a sparse block), and lists tied to depth match it."""
    lists = per_layer_lists({"num_hidden_layers": 6, "layer_types": ["linear_attention"] * 3 + ["full_attention"] * 3,
                             "mlp_layer_types": ["dense", "sparse", "sparse", "dense", "hash", "sparse"],
                             "moe_layers": list(range(6)), "intermediate_size": [64] * 6})
    assert lists == {"num_hidden_layers": 3, "layer_types": ["linear_attention", "full_attention", "linear_attention"],
                     "mlp_layer_types": ["dense", "sparse", "hash"]}  # indices (6 kinds) and TINY's sizes untouched
    config = tiny_config("qwen3_next")
    assert config.num_hidden_layers == 2 and set(config.layer_types) == {"linear_attention", "full_attention"}
    text = tiny_config("qwen3_5").get_text_config()
    assert len(text.layer_types) == text.num_hidden_layers and "full_attention" in text.layer_types
