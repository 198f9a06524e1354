"""Parameter counts and parameter/optimiser-state memory from the model built on the meta device.

No weights are allocated and nothing is downloaded: presets carry their architecture, so even a
Mixtral is counted in a second. Trainable parameters follow the adapter's published shapes
(LoRA r*(in+out) per target linear and per expert of a targeted fused expert parameter, DoRA + one
magnitude per output row, SoRA/SDoRA + r gates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ftlab.adapters.registry import get_adapter
from ftlab.models import build_model, build_tokenizer
from ftlab.models.structure import LINEAR_TYPES, decoder_blocks, decoder_linears, expert_parameters, matches

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: bytes per trainable parameter for AdamW training: fp32 master value, gradient, two moments
TRAINABLE_STATE_BYTES = 16
#: bytes per weight of a bitsandbytes k-bit linear: nf4 = 4 bits + one fp32 absmax per 64 weights
#: quantised again to 8 bits (double quantisation); int8 = 1 byte + one fp32 scale per row (~0)
KBIT_BYTES = {"nf4": 0.5 + (1 + 4 / 256) / 64, "int8": 1.0}


@dataclass(frozen=True)
class ModelFacts:
    total: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    #: every linear but the LM head: (module name, in_features, out_features)
    linears: tuple[tuple[str, int, int], ...] = ()
    #: module names of the default targets (decoder linears, no router)
    default_targets: tuple[str, ...] = ()
    #: module name of the LM head (bitsandbytes leaves it unquantised)
    lm_head: str | None = None
    #: parameters of the largest decoder block (the unit FSDP gathers at once)
    block_params: int = 0
    #: MLP width a token passes through: intermediate size x experts per token (MoE)
    intermediate: int = 0
    #: fused MoE expert parameters of the decoder blocks: (parameter name, experts, in, out) of
    #: each; every one is a default target (one rank-r update per expert)
    experts: tuple[tuple[str, int, int, int], ...] = ()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


@lru_cache(maxsize=32)
def _facts(model_json: str) -> ModelFacts:
    model_cfg = OmegaConf.create(json.loads(model_json))
    tok = build_tokenizer(model_cfg) if model_cfg.tokenizer == "byte" else None
    model = build_model(model_cfg, tok, device="meta")
    head = model.get_output_embeddings()
    head_name = next((n for n, m in model.named_modules() if m is head), None)
    linears = tuple((name, *_in_out(mod)) for name, mod in model.named_modules()
                    if isinstance(mod, LINEAR_TYPES) and mod is not head)
    experts = tuple((name, *_expert_shape(model, name)) for name in expert_parameters(model))
    cfg = model.config
    width = next((int(getattr(cfg, k)) for k in ("intermediate_size", "ffn_dim", "n_inner")
                  if getattr(cfg, k, None)), 4 * int(getattr(cfg, "hidden_size", 0) or 0))
    return ModelFacts(
        total=sum(p.numel() for p in model.parameters()),
        hidden=int(getattr(cfg, "hidden_size", 0) or 0),
        layers=int(getattr(cfg, "num_hidden_layers", 0) or 0),
        heads=int(getattr(cfg, "num_attention_heads", 0) or 0),
        vocab=int(getattr(cfg, "vocab_size", 0) or 0),
        linears=linears,
        default_targets=tuple(decoder_linears(model)),
        lm_head=head_name,
        block_params=max((sum(p.numel() for p in model.get_submodule(b).parameters())
                          for b in decoder_blocks(model)), default=0),
        intermediate=width * int(getattr(cfg, "num_experts_per_tok", 1) or 1),
        experts=experts,
    )


def _in_out(module: nn.Module) -> tuple[int, int]:
    """(in, out) of a linear layer (``Conv1D`` keeps its weight as (in, out) and calls out ``nf``)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    rows, cols = module.weight.shape
    return rows, cols


def _expert_shape(model: nn.Module, name: str) -> tuple[int, int, int]:
    """(experts, in, out) of a fused expert parameter (``(experts, out, in)``, or ``(experts, in,
    out)`` where the experts module is transposed)."""
    experts, rows, cols = model.get_parameter(name).shape
    transposed = bool(getattr(model.get_submodule(name.rsplit(".", 1)[0]), "is_transposed", False))
    return (experts, rows, cols) if transposed else (experts, cols, rows)


def model_facts(model_cfg: Any) -> ModelFacts:
    return _facts(json.dumps(_plain(model_cfg), sort_keys=True, default=str))


def target_shapes(facts: ModelFacts, cfg: Any) -> list[tuple[int, int]]:
    """(in, out) of the matrices the adapter updates: the linears and every expert of the fused
    expert parameters of the configured list (peft's matching rule; an expert parameter also
    matches through its module, ``experts``) or of the default targets. Names that match nothing
    are the run's one-line error, not the plan's."""
    a = _plain(cfg.adapter)
    targets = a.get("target_modules") or _plain(cfg.model).get("target_modules")
    if targets is None:
        chosen = set(facts.default_targets)
        return ([(i, o) for name, i, o in facts.linears if name in chosen]
                + [(i, o) for _, e, i, o in facts.experts for _ in range(e)])
    hit = [(e, i, o) for name, e, i, o in facts.experts
           if any(matches(name, t) or matches(name.rsplit(".", 1)[0], t) for t in targets)]
    return ([(i, o) for name, i, o in facts.linears if any(matches(name, t) for t in targets)]
            + [(i, o) for e, i, o in hit for _ in range(e)])


def trainable_params(facts: ModelFacts, cfg: Any) -> int:
    """Adapter parameters the run will train (before any gate sparsity)."""
    a = _plain(cfg.adapter)
    spec = get_adapter(a.get("name"))
    if not spec.trains:
        return 0
    if spec.count_trainable is not None:
        return spec.count_trainable(cfg)
    if spec.full_weights or not spec.low_rank:
        return facts.total
    r = int(a["r"])
    total = 0
    for fan_in, fan_out in target_shapes(facts, cfg):
        total += r * (fan_in + fan_out)
        total += r if spec.gated else 0  # one gate per rank
        total += fan_out if spec.magnitude else 0  # one magnitude per output row
    return total


def weight_bytes(facts: ModelFacts, dtype: str, quantization: str | None = None) -> float:
    """Bytes of the frozen base. A k-bit base (bitsandbytes quantises every linear but the LM
    head) stores its linears in :data:`KBIT_BYTES`; peft's k-bit preparation then upcasts every
    other half-precision tensor (embeddings, norms, LM head, fused MoE experts) to float32."""
    if quantization is None:
        return facts.total * BYTES.get(dtype, 4)
    linear = sum(i * o for _, i, o in facts.linears)
    return linear * KBIT_BYTES[quantization] + (facts.total - linear) * 4


def static_memory_mb(facts: ModelFacts, trainable: int, dtype: str, devices: int = 1, *,
                     quantization: str | None = None, full: bool = False, sharded: bool = False) -> float:
    """Weights plus optimiser state per device, MiB.

    DDP replicates everything, so ``devices`` divides nothing. FSDP (``sharded``) splits weights,
    gradients and optimiser state over the ``devices`` ranks and gathers one decoder block at a
    time, with the next one prefetched: two blocks' weights in ``dtype`` on top of the shard.
    Full fine-tuning trains the base itself in float32 (ftlab upcasts what trains), so its
    weights are inside the 16 bytes per trainable parameter rather than counted again."""
    frozen = 0.0 if full else weight_bytes(facts, dtype, quantization)
    state = frozen + trainable * TRAINABLE_STATE_BYTES
    if sharded and devices > 1:
        gathered = 2 * facts.block_params * (4 if full else BYTES.get(dtype, 4))
        return (state / devices + gathered) / 2**20
    return state / 2**20


#: values a decoder block keeps per token for its backward: ``7 x hidden + 4 x MLP width`` (norm
#: inputs/outputs, q/k/v/attention output, gate/up/activation/product; LoRA's low-rank values are
#: negligible). Counted with ``ftlab.plan.measure`` on tiny Llamas with LoRA and sdpa
#: (tests/plan/test_plan_activations.py); Korthikanti et al.'s 34 s*h bytes at 16 bit for a 4h MLP
#: is the same count (17 h values) for a GPT block.
BLOCK_VALUES_PER_HIDDEN, BLOCK_VALUES_PER_MLP = 7, 4
#: logits, their float32 log-softmax and its gradient: three fp32 copies at vocabulary size
LOGIT_COPIES = 3
#: gradient checkpointing's peak on top of the kept block inputs: the block recomputed in the
#: backward holds its activations, their gradients and the re-run forward's temporaries at once,
#: measured at 2.7-3.3 x one block's kept activations (tests/plan/test_plan_activations.py)
RECOMPUTE_BLOCKS = 3


def activation_mb_per_sample(facts: ModelFacts, seq_len: int, dtype: str, checkpointing: bool = False,
                             attention: str = "sdpa", packed: bool = False) -> float:
    """Activation memory of one sequence (a packed row of ``seq_len`` tokens when ``packed``).

    Without checkpointing every block keeps :data:`BLOCK_VALUES_PER_HIDDEN` x hidden +
    :data:`BLOCK_VALUES_PER_MLP` x MLP width values per token; eager attention also keeps its
    scores and probabilities (Korthikanti et al. 2022: 5*a*s values per token; sdpa and flash
    kernels recompute them). With gradient checkpointing each block keeps only its input (s*h
    values) and one block at a time is recomputed in the backward (:data:`RECOMPUTE_BLOCKS`). The
    loss adds :data:`LOGIT_COPIES` float32 logits at vocabulary size. A packed row under sdpa or
    eager also carries its block-diagonal mask (s*s booleans). A fallback when no prior run has
    measured the peak."""
    if not (facts.hidden and facts.layers):
        return 0.0
    width = BYTES.get(dtype, 4)
    mlp = facts.intermediate or 4 * facts.hidden
    values = BLOCK_VALUES_PER_HIDDEN * facts.hidden + BLOCK_VALUES_PER_MLP * mlp
    if attention == "eager":
        values += 5 * facts.heads * seq_len
    block = seq_len * values * width
    logits = LOGIT_COPIES * seq_len * facts.vocab * 4
    mask = seq_len * seq_len if packed and attention in ("sdpa", "eager") else 0
    if checkpointing:
        kept = facts.layers * seq_len * facts.hidden * width
        return (kept + RECOMPUTE_BLOCKS * block + logits + mask) / 2**20
    return (facts.layers * block + logits + mask) / 2**20


def memory_mode(dtype: Any, quantization: Any, checkpointing: Any, packing: Any = None) -> str:
    """What changes peak memory besides model/adapter/batch: a prior only calibrates a run with
    the same mode (``bfloat16|nf4|ckpt``, ``|packed`` for rows of ``train.pack_length`` tokens)."""
    mode = f"{dtype or 'float32'}|{quantization or 'dense'}|{'ckpt' if checkpointing else 'full-act'}"
    return f"{mode}|packed" if packing else mode


#: what a trainable-only state holds per trainable parameter: the value and AdamW's two moments
STATE_COPIES = 3
#: loop, scheduler, RNG and data-position state, the record and the zip headers of one state
#: (measured by ``benchmarks/checkpoint_size.py``: 40-60 KiB on the tiny models)
STATE_OVERHEAD_BYTES = 64 * 1024


def param_bytes(adapter: str, dtype: str) -> int:
    """Bytes of one trainable value: peft keeps adapter weights in fp32 over a 16-bit base
    (``autocast_adapter_dtype``); full fine-tuning trains the weights in the model's dtype."""
    return BYTES.get(dtype, 4) if get_adapter(adapter).full_weights else 4


def state_bytes(trainable: int, adapter: str, dtype: str) -> int:
    """Bytes of one checkpoint / cached stage (:mod:`ftlab.training.state`): trainable values and
    their two AdamW moments, plus the fixed overhead. The frozen weights are not in it."""
    if trainable == 0:
        return 0
    return STATE_COPIES * trainable * param_bytes(adapter, dtype) + STATE_OVERHEAD_BYTES


def weights_bytes(facts: ModelFacts, dtype: str) -> int:
    """Bytes of a cached base model artifact (safetensors in the model's dtype)."""
    return facts.total * BYTES.get(dtype, 4)


#: AdamW's two moments per trainable value, fp32 each
ADAM_MOMENT_BYTES = 8


@dataclass(frozen=True)
class OptimizerGroup:
    """One AdamW parameter group of a run, as ``AdaptedModel.param_groups`` forms it."""

    name: str
    lr: float
    params: int
    state_bytes: int  # its AdamW moments


def optimizer_groups(facts: ModelFacts, cfg: Any) -> list[OptimizerGroup]:
    """One group at ``schedule.lr``; with ``adapter.lora_plus_ratio`` on a low-rank adapter,
    LoRA+'s two (``ftlab.adapters.peft_lora.lora_plus_groups``): A at lr, the B matrices and any
    per-row magnitudes (DoRA) at ratio x lr."""
    a, lr = _plain(cfg.adapter), float(cfg.schedule.lr)
    trainable = trainable_params(facts, cfg)
    spec = get_adapter(a.get("name"))
    ratio = a.get("lora_plus_ratio")
    if ratio is None or not spec.low_rank or trainable == 0:
        return [OptimizerGroup("main", lr, trainable, ADAM_MOMENT_BYTES * trainable)] if trainable else []
    r = int(a["r"])
    b = sum(r * o + (o if spec.magnitude else 0) for _, o in target_shapes(facts, cfg))
    return [OptimizerGroup("main", lr, trainable - b, ADAM_MOMENT_BYTES * (trainable - b)),
            OptimizerGroup("lora_plus_B", lr * float(ratio), b, ADAM_MOMENT_BYTES * b)]


def init_bytes(facts: ModelFacts, cfg: Any) -> int:
    """Bytes of a cached LoRA init that rewrites the base (PiSSA, OLoRA): each target linear's
    residual weight in the model's dtype, and its initial A and B in fp32 (peft keeps them so)."""
    r, width = int(_plain(cfg.adapter)["r"]), BYTES.get(str(cfg.model.dtype), 4)
    return sum(i * o * width + 4 * r * (i + o) for i, o in target_shapes(facts, cfg))


def mask_bytes(facts: ModelFacts) -> int:
    """Bytes of a cached mask: one bool per weight of the prunable linear layers and fused expert
    parameters (upper bound: every decoder linear and expert, as ``sparsity.modules`` selects by
    default)."""
    chosen = set(facts.default_targets)
    return (sum(i * o for name, i, o in facts.linears if name in chosen)
            + sum(e * i * o for _, e, i, o in facts.experts))
