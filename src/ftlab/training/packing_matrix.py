"""Packing on every causal-LM architecture transformers ships: packs exactly, or refused in one line.

For each model type of transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` a tiny random model is
built (:func:`tiny_config`: a few dozen hidden units, two layers, every attention window set to
:data:`WINDOW` tokens, shorter than the examples), with the attention implementation ftlab would
pick (``ftlab.models.attention``). Then ftlab's own pre-training check
(``ftlab.training.packing_check``) either refuses ``train.packing=true`` in one line, or the
examples of :data:`EXAMPLE_LENGTHS`, packed in one row the way training packs them, must give
each token the NLL it has with its example alone, to :data:`EXACT`. Anything else is a third
outcome that ``tests/training/test_packing_architectures.py`` fails on.
``python scripts/architecture_table.py`` writes the README's "Architectures" table from it.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ftlab.data.encoding import Encoded
from ftlab.data.packing import collate_packed, has_local_layers, model_inputs
from ftlab.errors import ConfigError
from ftlab.models.attention import resolve_attention
from ftlab.training.packing_check import check_packing, example_tokens, token_nll

#: attention window of every tiny config that has one: shorter than the examples
WINDOW = 8
#: examples packed in the checked row (longer than the window, unequal, one row with a padding tail)
EXAMPLE_LENGTHS = (21, 13, 10)
ROW_WIDTH = 48
#: per-token NLL difference (nats) below which packed equals alone (float32)
EXACT = 1e-5
VOCAB = 96
#: a tiny model above this many parameters is not built (multimodal towers keep their full sizes)
MAX_PARAMS = 30_000_000

#: sizes of every tiny config (names transformers maps per architecture through ``attribute_map``)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=256, head_dim=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
            num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=32, rotary_dim=8,
            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, kv_lora_rank=16, q_lora_rank=16,
            decoder_layers=2, encoder_layers=2, decoder_attention_heads=2, encoder_attention_heads=2,
            decoder_ffn_dim=64, encoder_ffn_dim=64)
#: sizes of a composite model's vision tower (the language model gets :data:`TINY`)
TINY_VISION = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=28,
                   patch_size=14, depth=1, embed_dim=32, num_heads=2)
#: window settings, given only to architectures whose config has the key (on any other config an
#: unknown key would be stored and read as a window the model does not have)
WINDOWED = dict(sliding_window=WINDOW, attention_chunk_size=WINDOW, window_size=WINDOW,
                use_sliding_window=True, max_window_layers=1)
#: model types whose tiny config needs other sizes than :data:`TINY` (transformers validates them)
OVERRIDES: dict[str, dict] = {
    "bamba": dict(mamba_n_heads=4, mamba_d_head=16),
    "granitemoehybrid": dict(mamba_n_heads=4, mamba_d_head=16),
    "mamba2": dict(num_heads=4, head_dim=16, n_groups=1),
    "plbart": dict(encoder_attention_heads=2, decoder_attention_heads=2),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]]),
}


@dataclasses.dataclass
class Outcome:
    """One architecture's row: ``packs`` (exact to :data:`EXACT`), ``refused`` (ftlab's one line),
    ``not built`` (no tiny model here, with why), or ``WRONG`` (the third outcome: a bug)."""

    model_type: str
    status: str
    detail: str = ""
    attention: str = ""
    difference: float | None = None


def tiny_config(model_type: str, head_dim: bool = True):
    """A tiny config of ``model_type``: :data:`TINY`, the :data:`WINDOWED` keys its config has and
    its :data:`OVERRIDES` (a composite model's language model gets them, its vision tower
    :data:`TINY_VISION`); ``head_dim=False`` leaves the head size to the architecture (MLA and
    partial-rotary models derive theirs from other sizes)."""
    fields = AutoConfig.for_model(model_type).to_dict()
    text = fields.get("text_config") if isinstance(fields.get("text_config"), dict) else fields
    windows = {k: v for k, v in WINDOWED.items() if k in text}
    sizes = {**TINY, **windows, **OVERRIDES.get(model_type, {})}
    if not head_dim:
        sizes.pop("head_dim", None)
    if text is not fields:  # per-layer lists of the full-size default are recomputed for two layers
        kept = {k: v for k, v in text.items() if k != "layer_types" and not k.startswith("per_layer")}
        sizes["text_config"] = {**kept, **sizes}
    if isinstance(fields.get("vision_config"), dict):
        sizes["vision_config"] = {**fields["vision_config"], **TINY_VISION}
    return AutoConfig.for_model(model_type, **sizes)


def _reason(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[-1][:140] if lines else ''}".rstrip(": ")


def build_tiny(model_type: str) -> tuple[torch.nn.Module | None, str]:
    """The tiny random model (float32, eval mode, seeded) and its attention, or ``None`` and why
    (it does not build, or an unpacked forward fails: the tiny sizes do not fit the architecture).
    Tried with :data:`TINY`'s head size, then with the architecture's own."""
    reason = ""
    for head_dim in (True, False):
        try:
            config = tiny_config(model_type, head_dim)
            attn = resolve_attention(config, "sdpa", say=False)
            with torch.device("meta"):
                meta = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
            n = sum(p.numel() for p in meta.parameters())
            if n > MAX_PARAMS:
                reason = f"{n / 1e6:.0f} M parameters at the smallest generic sizes (sub-models keep their own sizes)"
                continue
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
        except Exception as err:  # noqa: BLE001 - whatever transformers raises for this architecture
            reason = _reason(err)
            continue
        try:  # an unpacked forward must work, or the tiny sizes (not packing) are what fails
            ids = torch.arange(3, 3 + max(EXAMPLE_LENGTHS))[None] % VOCAB
            with torch.no_grad():
                model(input_ids=ids, attention_mask=torch.ones_like(ids))
        except Exception as err:  # noqa: BLE001 - as above
            reason = f"an unpacked forward fails at tiny sizes ({_reason(err)})"
            continue
        return model, attn
    return None, reason


def packed_difference(model: torch.nn.Module, seed: int = 1) -> float:
    """Largest per-token NLL difference of :data:`EXAMPLE_LENGTHS` packed (ftlab's collate and
    model inputs, labels as training has them) vs each example alone."""
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    examples = [example_tokens(n, vocab, model.config, gen) for n in EXAMPLE_LENGTHS]
    batch = collate_packed([[Encoded(e.tolist(), e.tolist()) for e in examples]], ROW_WIDTH, pad_id=0)
    inputs = model_inputs(batch, model.config._attn_implementation, torch.float32, has_local_layers(model.config))
    worst, at = 0.0, 0
    with torch.no_grad():
        packed = model(**inputs).logits[0]
        for e in examples:
            alone = model(input_ids=e[None], attention_mask=torch.ones_like(e[None])).logits[0]
            diff = (token_nll(packed[at:at + len(e)], e) - token_nll(alone, e)).abs().max()
            worst, at = max(worst, float(diff)), at + len(e)
    return worst


def outcome(model_type: str) -> Outcome:
    """Build ``model_type`` tiny and classify it (see :class:`Outcome`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, attn = build_tiny(model_type)
        if model is None:
            return Outcome(model_type, "not built", attn)
        try:
            check_packing(model, max(EXAMPLE_LENGTHS))
        except ConfigError as err:
            return Outcome(model_type, "refused", str(err), attn)
        try:
            diff = packed_difference(model)
        except Exception as err:  # noqa: BLE001 - passed ftlab's check, failed here: the third outcome
            return Outcome(model_type, "WRONG", _reason(err), attn)
    status = "packs" if diff <= EXACT else "WRONG"
    return Outcome(model_type, status, f"max per-token NLL difference {diff:.1e}", attn, diff)


def architectures() -> list[str]:
    """Every causal-LM model type of the installed transformers."""
    return list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


#: markers around the generated table in README.md
TABLE_BEGIN = "<!-- architectures-table: generated by scripts/architecture_table.py -->"
TABLE_END = "<!-- architectures-table end -->"


def _cell(o: Outcome) -> str:
    """The README cell of one outcome: its status and a reason without run-dependent numbers."""
    if o.status == "packs":
        return "packs exactly"
    if o.status == "refused":
        if "forward fails on a packed row" in o.detail:
            kind = o.detail.split("forward fails on a packed row (", 1)[1].split(":", 1)[0]
            return f"refused: its forward fails on a packed row ({kind})"
        return "refused: its per-token losses change when packed"
    return f"{o.status}: {o.detail}".replace("|", "/")


def render_table(outcomes: list[Outcome]) -> str:
    """The README's table (between :data:`TABLE_BEGIN` and :data:`TABLE_END`), one row per model type."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("packs", "refused", "not built")}
    lines = [TABLE_BEGIN, "",
             f"{len(outcomes)} causal-LM model types: {counts['packs']} pack exactly, {counts['refused']} "
             f"refuse `train.packing=true` in one line, {counts['not built']} have no tiny CPU build.", "",
             "| model type | attention | `train.packing=true` |", "|---|---|---|"]
    lines += [f"| `{o.model_type}` | {o.attention or '-'} | {_cell(o)} |" for o in outcomes]
    return "\n".join([*lines, "", TABLE_END])


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    head, rest = readme.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + table + tail
