"""Causal-LM model types whose forward needs more than token ids: refused up front in one line.

ftlab's tasks give a model token ids, an attention mask and labels. transformers ships a few
causal-LM classes that read something else per example (a language id, audio codebooks, another
model's key/value cache); built from ftlab's inputs they fail in their first forward with a
traceback, or run with a default that is not what the user's data means. They are refused when
the model is built, naming ``model.arch`` (or the directory's ``model_type``) and what the model
needs. ``ftlab.training.packing_matrix`` lists them in the README's architecture table.
"""

from __future__ import annotations

from ftlab.core.errors import ConfigError

#: model type -> what its forward needs besides token ids
EXTRA_INPUTS: dict[str, str] = {
    "xmod": "a language id per example (lang_ids) to pick its language adapters",
    "musicgen": "audio codebook ids (num_codebooks rows per example), not text token ids",
    "musicgen_melody": "audio codebook ids (num_codebooks rows per example), not text token ids",
    "gemma4_assistant": "the key/value cache of its target Gemma-4 model (a draft model for assisted decoding)",
    "gemma4_unified_assistant": "the key/value cache of its target Gemma-4 model (a draft model for assisted "
                                "decoding)",
}


def check_token_ids_suffice(model_type: str, key: str = "model.arch") -> None:
    """Refuse ``model_type`` in one line if its forward needs inputs ftlab's tasks do not give."""
    if model_type in EXTRA_INPUTS:
        raise ConfigError(key, model_type, f"a causal LM that reads token ids alone; {model_type} needs "
                          f"{EXTRA_INPUTS[model_type]}")
