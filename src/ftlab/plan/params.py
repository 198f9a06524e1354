"""Parameter counts and parameter/optimiser-state memory from the model built on the meta device.

No weights are allocated and nothing is downloaded: presets carry their architecture, so even a
Mixtral is counted in a second. Trainable parameters follow the adapter's published shapes
(LoRA r*(in+out) per target linear, DoRA + one magnitude per output row, SoRA/SDoRA + r gates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: bytes per trainable parameter for AdamW training: fp32 master value, gradient, two moments
TRAINABLE_STATE_BYTES = 16
#: adapters that add gates (one per rank per layer) / a magnitude (one per output row per layer)
GATED = ("sora", "sdora")
MAGNITUDE = ("dora", "sdora")


@dataclass(frozen=True)
class ModelFacts:
    total: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    # leaf name -> list of (in_features, out_features) of the linear layers with that name
    linears: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


@lru_cache(maxsize=32)
def _facts(model_json: str) -> ModelFacts:
    from ftlab.models import build_model, build_tokenizer

    model_cfg = OmegaConf.create(json.loads(model_json))
    tok = build_tokenizer(model_cfg) if model_cfg.tokenizer == "byte" else None
    model = build_model(model_cfg, tok, device="meta")
    linears: dict[str, list[tuple[int, int]]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head":
            linears.setdefault(name.rsplit(".", 1)[-1], []).append((mod.in_features, mod.out_features))
    cfg = model.config
    return ModelFacts(
        total=sum(p.numel() for p in model.parameters()),
        hidden=int(getattr(cfg, "hidden_size", 0) or 0),
        layers=int(getattr(cfg, "num_hidden_layers", 0) or 0),
        heads=int(getattr(cfg, "num_attention_heads", 0) or 0),
        vocab=int(getattr(cfg, "vocab_size", 0) or 0),
        linears=linears,
    )


def model_facts(model_cfg: Any) -> ModelFacts:
    return _facts(json.dumps(_plain(model_cfg), sort_keys=True, default=str))


def trainable_params(facts: ModelFacts, cfg: Any) -> int:
    """Adapter parameters the run will train (before any gate sparsity)."""
    a = _plain(cfg.adapter)
    name = a.get("name")
    if name == "none":
        return 0
    if name == "full" or "r" not in a:
        return facts.total
    targets = a.get("target_modules") or list(cfg.model.target_modules)
    r = int(a["r"])
    total = 0
    for leaf in targets:
        for fan_in, fan_out in facts.linears.get(leaf, []):
            total += r * (fan_in + fan_out)
            total += r if name in GATED else 0
            total += fan_out if name in MAGNITUDE else 0
    return total


def static_memory_mb(facts: ModelFacts, trainable: int, dtype: str, devices: int = 1) -> float:
    """Weights plus optimiser state per device, MiB. DDP replicates the weights, so ``devices``
    does not divide them; it is kept as a parameter for sharded strategies to use later."""
    weights = facts.total * BYTES.get(dtype, 4)
    return (weights + trainable * TRAINABLE_STATE_BYTES) / 2**20


def activation_mb_per_sample(facts: ModelFacts, seq_len: int, dtype: str) -> float:
    """Analytic activation memory of one sequence for a transformer trained without activation
    checkpointing (Korthikanti et al. 2022, eq. 2: s*h*(34 + 5*a*s/h) bytes per layer at 16 bit)
    plus the logits and their gradient. A fallback when no prior run has measured it."""
    if not (facts.hidden and facts.layers):
        return 0.0
    scale = BYTES.get(dtype, 4) / 2
    per_layer = seq_len * facts.hidden * (34 + 5 * facts.heads * seq_len / facts.hidden) * scale
    logits = 2 * seq_len * facts.vocab * 4
    return (facts.layers * per_layer + logits) / 2**20


#: what a trainable-only state holds per trainable parameter: the value and AdamW's two moments
STATE_COPIES = 3
#: loop, scheduler, RNG and data-position state, the record and the zip headers of one state
#: (measured by ``benchmarks/checkpoint_size.py``: 40-60 KiB on the tiny models)
STATE_OVERHEAD_BYTES = 64 * 1024


def param_bytes(adapter: str, dtype: str) -> int:
    """Bytes of one trainable value: peft keeps adapter weights in fp32 over a 16-bit base
    (``autocast_adapter_dtype``); full fine-tuning trains the weights in the model's dtype."""
    return BYTES.get(dtype, 4) if adapter == "full" else 4


def state_bytes(trainable: int, adapter: str, dtype: str) -> int:
    """Bytes of one checkpoint / cached stage (:mod:`ftlab.training.state`): trainable values and
    their two AdamW moments, plus the fixed overhead. The frozen weights are not in it."""
    if trainable == 0:
        return 0
    return STATE_COPIES * trainable * param_bytes(adapter, dtype) + STATE_OVERHEAD_BYTES


def weights_bytes(facts: ModelFacts, dtype: str) -> int:
    """Bytes of a cached base model artifact (safetensors in the model's dtype)."""
    return facts.total * BYTES.get(dtype, 4)


def mask_bytes(facts: ModelFacts) -> int:
    """Bytes of a cached mask: one bool per weight of the prunable linear layers (upper bound:
    every linear but the LM head, as ``sparsity.modules`` selects by default)."""
    return sum(i * o for dims in facts.linears.values() for i, o in dims)
