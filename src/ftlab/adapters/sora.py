"""SoRA and SDoRA: low-rank adapters with a gate per rank, sparsified by a proximal L1 step.

Layers (injected where peft would put its LoRA layers: same ``target_modules`` matching, same
``base_layer`` / ``lora_A`` / ``lora_B`` names):

* SoRA:  ``y = W x + s * B (g * A dropout(x))``, i.e. ``dW = s B diag(g) A``, ``s = alpha / r``.
* SDoRA: DoRA over the gated update, ``W' = m * V / ||V||_row`` with ``V = W + s B diag(g) A``;
  the norm is detached (DoRA paper section 4.3) and ``m`` starts at ``||W||_row``.
  With all gates 1 these are exactly peft's LoRA / DoRA forward passes (the tests check it).

Optimisation. The gates get "their own AdamW" as a *separate parameter group* ``gates`` of the
run's single AdamW (weight decay 0, lr ``gate_lr``), not as a second optimiser object. AdamW keeps
its moments per parameter and applies each group's own lr / decay, so this is the same arithmetic
as two AdamW instances; in exchange the gates follow the run's LambdaLR schedule, are clipped with
everything else, and are checkpointed/resumed by Lightning's optimiser state for free. After every
*real* optimiser step (``after_optimizer_step`` is an optimiser post-hook, so a step skipped by
AMP's scaler runs no prox) the gates are replaced by the proximal operator of ``xi * |g|``:

* ``proximal=exact`` (default): the true soft-threshold ``sign(g) max(|g| - xi, 0)``;
* ``proximal=released``: the released code's three-mask quirk (also zeroes ``|g|`` in ``(xi, 2xi)``).

``xi`` is ``sparse_lambda_2`` (``threshold_scale=none``, as in the released code) or
``sparse_lambda_2 x`` the gate group's lr of that step (``threshold_scale=lr``). The loss gets
``sparse_lambda * mean(|g|)`` over all gate entries of the model.

Thresholds per stage (``schedule=stages``): a stage's own ``sparse_lambda_2`` wins; otherwise the
stage takes the ``xi_schedule`` value for its index (``constant``: ``sparse_lambda_2``; ``linear``
/ ``log_linear`` / ``exp_linear``: from ``sparse_lambda_2`` to ``xi_max`` over the stages). The
threshold is a function of the config and the stage index only, so a resumed run gets the same
``xi`` as an uninterrupted one.

Accounting: ``sparsity`` = fraction of gates exactly 0; ``effective_params`` = per layer
``k (in + out) + k`` for ``k`` non-zero gates (the live ranks of A and B plus their gates), plus
``out`` magnitudes for SDoRA. With no zero gate this equals ``trainable_params``.

Export: ranks with ``g = 0`` are dropped and ``g`` folded into B (:func:`ftlab.adapters.gates.fold_gates`)
giving a peft LoRA (SoRA) or DoRA (SDoRA) with a per-layer rank (``rank_pattern``; ``alpha_pattern``
keeps ``s = alpha / r`` of the trained adapter). peft ranks are >= 1, so a SoRA layer with no live
rank is left out of the export (its update is 0) and an SDoRA layer keeps one zero rank so that its
trained magnitude is still applied. A SoRA adapter with no live rank at all has no peft form:
``save_adapter`` then writes nothing and returns False (the merged model is the base model).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ftlab.adapters import gates as G
from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.peft_lora import LowRankConfig, validate_low_rank
from ftlab.adapters.registry import AdapterSpec, register_adapter
from ftlab.adapters.targets import adapter_targets
from ftlab.core.errors import fail
from ftlab.models.quantization import dense_weight, dequantized_model, is_quantized
from ftlab.models.structure import LINEAR_TYPES, matches

GATE_INITS = ("ones", "normal")
THRESHOLD_SCALES = ("none", "lr")
GATE_GROUP = "gates"


@dataclass
class SoraConfig(LowRankConfig):
    name: str = "sora"
    gate_init: str = "ones"  # ones | normal (released code: normal)
    sparse_lambda: float = 0.1  # L1 coefficient on mean |g|
    sparse_lambda_2: float = 1e-3  # threshold xi of the proximal step
    gate_lr: float | None = None  # None = the schedule's lr
    threshold_scale: str = "none"  # none: xi as given | lr: xi x current gate lr
    proximal: str = "exact"  # exact soft-threshold | released (three-mask quirk)
    xi_schedule: str = "constant"  # per-stage xi: constant | linear | log_linear | exp_linear
    xi_max: float | None = None  # last stage's xi for the non-constant xi_schedule


@dataclass
class SdoraConfig(SoraConfig):
    name: str = "sdora"


# -- validation ------------------------------------------------------------------------------
def validate_sora(adapter_cfg: Any, run_cfg: Any = None) -> None:
    validate_low_rank(adapter_cfg, run_cfg)
    a = adapter_cfg
    if a.gate_init not in GATE_INITS:
        fail("adapter.gate_init", a.gate_init, f"one of {list(GATE_INITS)}")
    if a.sparse_lambda < 0:
        fail("adapter.sparse_lambda", a.sparse_lambda, "a number >= 0")
    if a.sparse_lambda_2 < 0:
        fail("adapter.sparse_lambda_2", a.sparse_lambda_2, "a number >= 0")
    if a.gate_lr is not None and a.gate_lr <= 0:
        fail("adapter.gate_lr", a.gate_lr, "a number > 0, or null (= schedule.lr)")
    if a.threshold_scale not in THRESHOLD_SCALES:
        fail("adapter.threshold_scale", a.threshold_scale, f"one of {list(THRESHOLD_SCALES)}")
    if a.proximal not in G.PROXIMAL_OPERATORS:
        fail("adapter.proximal", a.proximal, f"one of {list(G.PROXIMAL_OPERATORS)}")
    if a.xi_schedule not in G.XI_SCHEDULES:
        fail("adapter.xi_schedule", a.xi_schedule, f"one of {list(G.XI_SCHEDULES)}")
    if a.xi_schedule != "constant":
        if run_cfg is not None and run_cfg.schedule.name != "stages":
            fail("adapter.xi_schedule", a.xi_schedule, "'constant' unless schedule=stages (xi changes per stage)")
        if a.xi_max is None or a.xi_max < a.sparse_lambda_2:
            fail("adapter.xi_max", a.xi_max, f"a number >= adapter.sparse_lambda_2 ({a.sparse_lambda_2})")
        if a.xi_schedule == "exp_linear" and a.sparse_lambda_2 <= 0:
            fail("adapter.sparse_lambda_2", a.sparse_lambda_2, "a number > 0 with xi_schedule=exp_linear")
    elif a.xi_max is not None and a.xi_max < 0:
        fail("adapter.xi_max", a.xi_max, "a number >= 0, or null")


# -- layers ----------------------------------------------------------------------------------
def _adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    """Adapters train in float32 on half-precision and k-bit bases (as peft does by default)."""
    if not weight.is_floating_point() or weight.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return weight.dtype


class GatedLoraLinear(nn.Module):
    """SoRA around a frozen ``nn.Linear``: ``base(x) + s * B(g * A(dropout(x)))``."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float, gate_init: str):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.alpha = int(r), float(alpha)
        self.scaling = self.alpha / self.r
        w = base_layer.weight
        kw = {"device": w.device, "dtype": _adapter_dtype(w)}
        self.lora_A = nn.Linear(self.in_features, self.r, bias=False, **kw)
        self.lora_B = nn.Linear(self.r, self.out_features, bias=False, **kw)
        self.lora_gate = nn.Parameter(torch.empty(self.r, **kw))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        if gate_init == "ones":
            nn.init.ones_(self.lora_gate)
        else:
            nn.init.normal_(self.lora_gate)

    def delta_weight(self) -> torch.Tensor:
        return G.gated_delta(self.lora_A.weight, self.lora_B.weight, self.lora_gate, self.scaling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        xa = x.to(self.lora_A.weight.dtype)
        update = self.lora_B(self.lora_A(self.lora_dropout(xa)) * self.lora_gate) * self.scaling
        return result + update.to(result.dtype)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        w = dense_weight(self.base_layer)  # dequantised on a k-bit base
        return (w.to(self.lora_A.weight.dtype) + self.delta_weight()).to(w.dtype)


class GatedDoraLinear(GatedLoraLinear):
    """SDoRA: DoRA's magnitude/direction split of ``W + s B diag(g) A``."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float, gate_init: str):
        super().__init__(base_layer, r, alpha, dropout, gate_init)
        w = base_layer.weight
        self.lora_magnitude = nn.Parameter(G.row_norm(w.detach().to(self.lora_A.weight.dtype)))

    @torch.no_grad()
    def _norm(self, weight: torch.Tensor) -> torch.Tensor:
        return G.row_norm(weight + self.delta_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        xa = x.to(self.lora_A.weight.dtype)
        weight = self.base_layer.weight.to(xa.dtype)
        bias = self.base_layer.bias
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            base_result = result.to(xa.dtype) if bias is None else (result - bias).to(xa.dtype)
        else:  # as peft: the (m/n - 1) W x term sees the dropped-out input too
            xa = self.lora_dropout(xa)
            base_result = F.linear(xa, weight)
        scale = (self.lora_magnitude / self._norm(weight)).view(1, -1)
        lora = self.lora_B(self.lora_A(xa) * self.lora_gate)
        return result + ((scale - 1) * base_result + scale * lora * self.scaling).to(result.dtype)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        w = self.base_layer.weight
        merged = G.dora_merge(w.to(self.lora_A.weight.dtype), self.delta_weight(), self.lora_magnitude)
        return merged.to(w.dtype)


def inject(model: nn.Module, targets: list[str], layer_cls: type, adapter_cfg: Any) -> dict[str, GatedLoraLinear]:
    """Replace every targeted ``nn.Linear`` by a gated layer; returns them by module name. A target
    of another linear type (transformers' ``Conv1D``, weight stored (in, out)) is refused in one
    line rather than skipped."""
    layers: dict[str, GatedLoraLinear] = {}
    other = [n for n, m in model.named_modules()
             if isinstance(m, LINEAR_TYPES) and not isinstance(m, nn.Linear) and n in targets]
    if other:
        fail("adapter", str(adapter_cfg.name), f"nn.Linear targets: the gated layer wraps nn.Linear, and {other[0]} "
             f"is a {type(model.get_submodule(other[0])).__name__} (use adapter=lora, dora or masked)")
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and any(matches(name, t) for t in targets):
            layer = layer_cls(module, adapter_cfg.r, adapter_cfg.alpha, adapter_cfg.dropout, adapter_cfg.gate_init)
            _set_module(model, name, layer)
            layers[name] = layer
    return layers


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


# -- the adapted model -----------------------------------------------------------------------
class SoraModel(AdaptedModel):
    gated = True
    layer_cls: type = GatedLoraLinear
    use_dora = False

    def __init__(self, model: nn.Module, adapter_cfg: Any, run_cfg: Any):
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers = inject(model, adapter_targets(model, adapter_cfg, run_cfg), self.layer_cls, adapter_cfg)
        super().__init__(model, adapter_cfg, run_cfg)
        self.proximal = str(adapter_cfg.proximal)
        self.threshold_scale = str(adapter_cfg.threshold_scale)
        self.sparse_lambda = float(adapter_cfg.sparse_lambda)
        self.stage_thresholds = self._stage_thresholds(adapter_cfg, run_cfg)
        self.xi = float(adapter_cfg.sparse_lambda_2)
        self.last_xi = self.xi  # threshold of the latest prox step (after lr scaling)
        self._merged = False

    @staticmethod
    def _stage_thresholds(adapter_cfg: Any, run_cfg: Any) -> list[float]:
        stages = run_cfg.schedule.stages if run_cfg.schedule.name == "stages" else None
        n = len(stages) if stages else 1
        xi_max = adapter_cfg.xi_max if adapter_cfg.xi_max is not None else adapter_cfg.sparse_lambda_2
        values = G.threshold_values(adapter_cfg.xi_schedule, float(adapter_cfg.sparse_lambda_2), float(xi_max), n)
        if stages:
            values = [v if st.sparse_lambda_2 is None else float(st.sparse_lambda_2) for v, st in zip(values, stages)]
        return values

    # -- optimisation ----------------------------------------------------------------------
    def gates(self) -> list[nn.Parameter]:
        return [layer.lora_gate for layer in self.layers.values()]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        gate_ids = {id(g) for g in self.gates()}
        main = [p for p in self.model.parameters() if p.requires_grad and id(p) not in gate_ids]
        gate_lr = float(self.adapter_cfg.gate_lr) if self.adapter_cfg.gate_lr is not None else lr
        return [{"params": main, "lr": lr, "weight_decay": weight_decay, "name": "main"},
                {"params": self.gates(), "lr": gate_lr, "weight_decay": 0.0, "name": GATE_GROUP}]

    def regularization(self) -> torch.Tensor | None:
        if self.sparse_lambda == 0:
            return None
        gates = self.gates()
        total = sum(g.abs().sum() for g in gates)
        return self.sparse_lambda * total / sum(g.numel() for g in gates)

    def on_stage_start(self, stage: Any) -> None:
        self.xi = self.stage_thresholds[min(stage.index, len(self.stage_thresholds) - 1)]

    def threshold(self, optimizer: torch.optim.Optimizer | None = None) -> float:
        """The xi of a prox step taken now (scaled by the gate group's current lr if asked)."""
        if self.threshold_scale == "lr" and optimizer is not None:
            group = next(g for g in optimizer.param_groups if g.get("name") == GATE_GROUP)
            return self.xi * float(group["lr"])
        return self.xi

    @torch.no_grad()
    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        xi = self.threshold(optimizer)
        self.last_xi = xi
        if xi == 0:
            return  # both operators are the identity at xi = 0
        for g in self.gates():
            g.copy_(G.proximal(g, xi, self.proximal))

    # -- accounting ------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @torch.no_grad()
    def sparsity(self) -> float:
        return G.zero_fraction(torch.cat([g.detach().reshape(-1) for g in self.gates()]))

    @torch.no_grad()
    def layer_sparsity(self) -> dict[str, float]:
        return {name: G.zero_fraction(layer.lora_gate) for name, layer in self.layers.items()}

    @torch.no_grad()
    def effective_params(self) -> int:
        total = 0
        for layer in self.layers.values():
            k = int((layer.lora_gate != 0).sum())
            total += G.effective_rank_params(k, layer.in_features, layer.out_features) + k
            if self.use_dora:
                total += layer.out_features
        return total

    # -- export ----------------------------------------------------------------------------
    @torch.no_grad()
    def folded(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per layer: A and B of the live ranks with g folded into B (+ DoRA magnitude)."""
        out = {}
        for name, layer in self.layers.items():
            a, b = G.fold_gates(layer.lora_A.weight, layer.lora_B.weight, layer.lora_gate)
            entry = {"A": a, "B": b}
            if self.use_dora:
                entry["magnitude"] = layer.lora_magnitude.detach().clone()
                if a.shape[0] == 0:  # peft needs r >= 1: one zero rank keeps the magnitude in play
                    entry["A"] = a.new_zeros(1, layer.in_features)
                    entry["B"] = b.new_zeros(layer.out_features, 1)
            if entry["A"].shape[0] > 0:
                out[name] = entry
        return out

    def export_config(self, folded: dict[str, dict[str, torch.Tensor]]):
        from peft import LoraConfig  # heavy (~4 s of imports): only when an adapter is exported

        ranks = {name: int(t["A"].shape[0]) for name, t in folded.items()}
        r0 = self.adapter_cfg.r
        return LoraConfig(
            r=max(ranks.values()),
            lora_alpha=self.adapter_cfg.alpha,
            rank_pattern={re.escape(n): k for n, k in ranks.items()},
            # keep s = alpha / r of the trained adapter at the smaller rank k
            alpha_pattern={re.escape(n): self.adapter_cfg.alpha * k / r0 for n, k in ranks.items()},
            lora_dropout=self.adapter_cfg.dropout,
            target_modules=list(ranks),
            use_dora=self.use_dora,
            task_type="CAUSAL_LM",
        )

    @torch.no_grad()
    def save_adapter(self, directory: Path) -> bool:
        """Write the pruned adapter in peft format (see the module docstring for empty layers)."""
        if self._merged:
            raise RuntimeError("save_adapter must run before merged_model (the merge consumes the layers)")
        folded = self.folded()
        if not folded:
            return False
        from peft import get_peft_model  # heavy (~4 s of imports): only when an adapter is exported

        config = self.export_config(folded)
        for name, layer in self.layers.items():  # peft wraps the plain base layers in place
            _set_module(self.model, name, layer.base_layer)
        try:
            peft_model = get_peft_model(self.model, config)
            inner = peft_model.base_model.model
            for name, t in folded.items():
                mod = inner.get_submodule(name)
                mod.lora_A["default"].weight.copy_(t["A"])
                mod.lora_B["default"].weight.copy_(t["B"])
                if self.use_dora:
                    mod.lora_magnitude_vector["default"].weight.copy_(t["magnitude"])
            peft_model.save_pretrained(str(directory), safe_serialization=True)
            peft_model.base_model.unload()
        finally:
            for name, layer in self.layers.items():
                _set_module(self.model, name, layer)
        return True

    @torch.no_grad()
    def merged_model(self) -> nn.Module:
        """The base architecture with ``W'`` in its linears; consumes the gated layers (call last)."""
        if not self._merged:
            quantized = is_quantized(self.model)
            for name, layer in self.layers.items():
                base = layer.base_layer
                if quantized:  # a plain linear replaces the k-bit one (the merge is not re-quantised)
                    merged = layer.merged_weight()
                    base = nn.Linear(layer.in_features, layer.out_features, bias=base.bias is not None,
                                     device=merged.device, dtype=merged.dtype)
                    base.weight.copy_(merged)
                    if base.bias is not None:
                        base.bias.copy_(layer.base_layer.bias)
                else:
                    base.weight.copy_(layer.merged_weight())
                _set_module(self.model, name, base)
            if quantized:  # the linears that were not targets
                self.model = dequantized_model(self.model)
            self._merged = True
        return self.model


class SdoraModel(SoraModel):
    layer_cls = GatedDoraLinear
    use_dora = True


register_adapter(AdapterSpec("sora", SoraConfig, SoraModel, validate=validate_sora, low_rank=True, gated=True,
                             supports_quantized_base=True, label="SoRA",
                             experts_note="SoRA's gated layer replaces nn.Linear modules, and fused experts have none"))
register_adapter(AdapterSpec("sdora", SdoraConfig, SdoraModel, validate=validate_sora, low_rank=True, gated=True,
                             magnitude=True, label="SDoRA",
                             experts_note="SDoRA's gated layer replaces nn.Linear modules, and fused experts have none"))
