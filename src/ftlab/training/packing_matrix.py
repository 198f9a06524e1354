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

from ftlab.core.errors import ConfigError
from ftlab.data.encoding import Encoded
from ftlab.data.packing import collate_packed, has_local_layers, model_inputs
from ftlab.models.attention import resolve_attention
from ftlab.models.inputs import check_token_ids_suffice
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
#: sizes of any other sub-model (audio towers, a byte model's patcher/encoder/decoder/global models),
#: each given only to a sub-config that has the key
TINY_SUB = dict(hidden_size=32, hidden_size_global=32, intermediate_size=64, num_hidden_layers=1, num_blocks=1,
                num_attention_heads=2, num_key_value_heads=2, head_dim=16, ext_pw_out_channel=32,
                depthwise_separable_out_channel=32, nemo_conv_channels=32, encoder_layers=1, encoder_attention_heads=2,
                encoder_ffn_dim=64, d_model=32, adapter_in_dim=32, adapter_out_dim=32, adapter_input_size=32)
#: window settings, given only to architectures whose config has the key (on any other config an
#: unknown key would be stored and read as a window the model does not have)
WINDOWED = dict(sliding_window=WINDOW, attention_chunk_size=WINDOW, window_size=WINDOW,
                use_sliding_window=True, max_window_layers=1)
#: Dots-3's sliding-window MLA layers' own sizes
SWA_MLA = dict(swa_num_attention_heads=2, swa_num_key_value_heads=2, swa_q_lora_rank=16, swa_kv_lora_rank=16,
               swa_head_dim=16, swa_qk_nope_head_dim=8, swa_v_head_dim=16)
#: an :data:`OVERRIDES` value that removes the key from the tiny config (the architecture has no such setting)
DROP = object()
#: MoE routing groups, given only to configs that have the keys: the defaults' 8 groups do not
#: divide :data:`TINY`'s four experts
GROUPED = dict(n_group=1, topk_group=1)
#: model types whose tiny config needs other sizes than :data:`TINY` (transformers validates them)
OVERRIDES: dict[str, dict] = {
    "mamba2": dict(num_heads=4, head_dim=16, n_groups=1),
    "plbart": dict(encoder_attention_heads=2, decoder_attention_heads=2),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]]),
    # hybrids: put one attention layer among the two tiny layers (the defaults' patterns start with
    # linear/recurrent layers, and a model without attention has no sequence length to read)
    "bamba": dict(mamba_n_heads=4, mamba_d_head=16, attn_layer_indices=[1]),
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
    "recurrent_gemma": dict(block_types=["recurrent", "attention"], attention_window_size=WINDOW),
    "granitemoehybrid": dict(mamba_n_heads=4, mamba_d_head=16, layer_types=["mamba", "attention"]),
    "dory": dict(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"], n_input_layers=1, n_recurrent_layers=0,
                 n_output_layers=1),
    "dots1": dict(n_shared_experts=1),
    # per-layer input embeddings: a full-size vocabulary of their own
    "gemma4_text": dict(vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8),
    "gemma4": dict(vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8),
    "gemma3n_text": dict(num_kv_shared_layers=0, vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8),
    "zaya": dict(num_experts_per_tok=1),
    # its native chunkwise kernel needs heads of 32: at 16 (hidden 32 / 2 heads) its cell state's
    # shape does not match, whatever the chunk size
    "xlstm": dict(v_head_dim=DROP, head_dim=DROP, hidden_size=128, num_heads=4, chunk_size=64),
    # its depths are num_encoder_layers / num_decoder_layers: setting num_hidden_layers or
    # decoder_layers (TINY's keys) raises NotImplementedError in its config
    "prophetnet": dict(num_hidden_layers=DROP, decoder_layers=DROP, num_encoder_layers=2, num_decoder_layers=2),
    "reformer": dict(is_decoder=True, axial_pos_embds_dim=[16, 16], axial_pos_shape=[8, 32],
                     local_attn_chunk_length=8, lsh_attn_chunk_length=8),
    # byte model: hash n-gram embeddings of half a million rows
    "blt": dict(encoder_hash_byte_group_vocab=64, local_attention_window_len=WINDOW),
    "axk1": dict(head_dim=8),
    "bailing_hybrid": dict(n_group=1, topk_group=1),  # its config names the groups num_expert_group
    # sliding layers' MLA sizes, set by swa_* arguments (full size by default)
    "dots3_note": SWA_MLA,
    "dots3_note_text": SWA_MLA,
    # MLA: the rotary embedding's size is head_dim, which must be the rotary part of a query head
    "longcat_flash": dict(head_dim=8),
    # sliding layers have twice the kv heads, which must divide the query heads
    "mimo_v2_flash": dict(num_attention_heads=4, num_key_value_heads=2),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"]),
    "qwen4_exp": dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=8,
                      indexer_compress_ratio=4),
    "qwen4_exp_text": dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=8,
                           indexer_compress_ratio=4),
    "cohere_compass_text": dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
    "dbrx": dict(attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                 ffn_config=dict(hidden_size=32, ffn_hidden_size=64, moe_num_experts=4, moe_top_k=2),
                 d_model=32, n_heads=2, n_layers=2),
    "xlnet": dict(max_position_embeddings=DROP, d_head=16),
}


@dataclasses.dataclass
class Outcome:
    """One architecture's row: ``packs`` (exact to :data:`EXACT`), ``refused`` (ftlab's one line
    refusing packing), ``unsupported`` (ftlab's one line refusing the model type: its forward needs
    more than token ids, ``ftlab.models.inputs``), ``not built`` (no tiny model here, with why), or
    ``WRONG`` (the third outcome: a bug)."""

    model_type: str
    status: str
    detail: str = ""
    attention: str = ""
    difference: float | None = None


#: a per-layer list of the default config is shrunk to the tiny depth only if it has at most this
#: many distinct entries (layer kinds; longer lists such as layer indices need an override)
MAX_LAYER_KINDS = 3


def per_layer_lists(text: dict) -> dict:
    """The default config's per-layer lists (as long as its depth, not sized by :data:`TINY`) with
    every distinct entry kept once, in order of first appearance, cycled to the tiny depth, and that
    depth (two layers, or one per kind where a list has more kinds): a hybrid's two tiny layers then
    hold an attention layer besides its linear/recurrent one, and a MoE's a sparse block besides its
    dense one, where keeping the first two entries would leave out either."""
    depth = text.get("num_hidden_layers")
    if not isinstance(depth, int):
        return {}
    kinds = {}
    for key, value in text.items():
        if key in TINY or not isinstance(value, list) or len(value) != depth:
            continue
        distinct = [v for i, v in enumerate(value) if v not in value[:i]]
        if len(distinct) <= MAX_LAYER_KINDS:
            kinds[key] = distinct
    if not kinds:
        return {}
    n = max(TINY["num_hidden_layers"], *map(len, kinds.values()))
    return {"num_hidden_layers": n, **{k: [u[i % len(u)] for i in range(n)] for k, u in kinds.items()}}


def _sub_config(fields: dict, sizes: dict) -> dict:
    """A sub-model's config dict at ``sizes``, without the default's per-layer settings (lists and
    ``per_layer_config`` keyed by layer index), which belong to the full depth."""
    return {**{k: v for k, v in fields.items() if k != "layer_types" and not k.startswith("per_layer")}, **sizes}


def tiny_config(model_type: str, head_dim: bool = True):
    """A tiny config of ``model_type``: :data:`TINY`, the :data:`WINDOWED` and :data:`GROUPED` keys
    its config has, its per-layer lists shrunk (:func:`per_layer_lists`) and its :data:`OVERRIDES`
    (a composite model's language model gets them, its vision tower :data:`TINY_VISION`, any other
    sub-model the :data:`TINY_SUB` keys it has); ``head_dim=False`` leaves the head size to the
    architecture (MLA and partial-rotary models derive theirs from other sizes)."""
    fields = AutoConfig.for_model(model_type).to_dict()
    text = fields.get("text_config") if isinstance(fields.get("text_config"), dict) else fields
    windows = {k: v for k, v in {**WINDOWED, **GROUPED}.items() if k in text}
    sizes = {**TINY, **windows, **per_layer_lists(text), **OVERRIDES.get(model_type, {})}
    if not head_dim:
        sizes.pop("head_dim", None)
    sizes = {k: v for k, v in sizes.items() if v is not DROP}
    if text is not fields:
        sizes["text_config"] = _sub_config(text, sizes)
    if isinstance(fields.get("vision_config"), dict):
        vision = fields["vision_config"]
        adapter = {k: v for k, v in TINY_SUB.items() if k.startswith("adapter_") and k in vision}
        sizes["vision_config"] = _sub_config(vision, {**TINY_VISION, **adapter})
    for key, sub in fields.items():
        if (key.endswith("_config") and key not in ("text_config", "vision_config") and not key.startswith("per_layer")
                and isinstance(sub, dict)):
            own = sizes.get(key) or {}  # an override's sizes of this sub-model win
            sizes[key] = _sub_config(sub, {**{k: v for k, v in TINY_SUB.items() if k in sub}, **own})
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
    try:
        check_token_ids_suffice(model_type)
    except ConfigError as err:
        return Outcome(model_type, "unsupported", str(err))
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
    if o.status == "unsupported":
        return "model refused: needs " + o.detail.split(" needs ", 1)[1]
    return f"{o.status}: {o.detail}".replace("|", "/")


def render_table(outcomes: list[Outcome]) -> str:
    """The README's table (between :data:`TABLE_BEGIN` and :data:`TABLE_END`), one row per model type."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("packs", "refused", "unsupported", "not built")}
    lines = [TABLE_BEGIN, "",
             f"{len(outcomes)} causal-LM model types: {counts['packs']} pack exactly, {counts['refused']} "
             f"refuse `train.packing=true` in one line, {counts['unsupported']} are refused as models in one "
             f"line (their forward needs more than token ids), {counts['not built']} have no tiny CPU build.", "",
             "| model type | attention | `train.packing=true` |", "|---|---|---|"]
    lines += [f"| `{o.model_type}` | {o.attention or '-'} | {_cell(o)} |" for o in outcomes]
    return "\n".join([*lines, "", TABLE_END])


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    head, rest = readme.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + table + tail
