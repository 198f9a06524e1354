"""LoRA and DoRA through peft (``LoraConfig(use_dora=...)``), with peft's rsLoRA scaling
(``adapter.use_rslora``) and LoRA+'s learning rate for the B matrices (``adapter.lora_plus_ratio``)."""

from __future__ import annotations

import copy
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ftlab.adapters.base import AdaptedModel
from ftlab.adapters.inits import InitSpec, init_spec
from ftlab.adapters.registry import AdapterSpec, get_adapter, register_adapter
from ftlab.adapters.targets import adapter_targets, peft_parameter_list, peft_target_list, split_targets
from ftlab.config.fields import knob
from ftlab.config.schema import AdapterConfig, CalibrationConfig
from ftlab.core.errors import fail
from ftlab.hardware import get_target, shards_parameters
from ftlab.models.quantization import dequantized_merge, is_quantized
from ftlab.models.structure import is_transposed

if TYPE_CHECKING:
    from peft import LoraConfig as PeftLoraConfig


@dataclass
class LowRankConfig(AdapterConfig):
    """Keys shared by every low-rank family (LoRA, DoRA, SoRA, SDoRA, masked LoRA)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


@dataclass
class LoraConfig(LowRankConfig):
    name: str = "lora"
    # rsLoRA (Kalajdzievski, 2023): scaling alpha / sqrt(r) instead of alpha / r (peft's use_rslora)
    use_rslora: bool = False
    # LoRA+ (Hayou et al., ICML 2024): lr of the B matrices = ratio x lr, in their own AdamW group
    # (peft's create_loraplus_optimizer grouping); null = one lr for A and B
    lora_plus_ratio: float | None = None
    init: str = knob("default", "initialisation of A and B (peft's init_lora_weights): default | gaussian | "
                     "pissa | olora | corda | eva | loftq; pissa/olora/corda move principal directions out of "
                     "the frozen base into A and B (the export converts the adapter back to the original base), "
                     "eva/corda read adapter.calibration batches, loftq writes a quantised base (CUDA only)")
    calibration: CalibrationConfig = knob(doc="batches of the task's train split that eva and corda read",
                                          factory=CalibrationConfig)
    eva_rho: float = knob(2.0, "EVA: a layer's rank may grow to r x rho when ranks are redistributed (1 = none)",
                          ge=1)
    eva_tau: float = knob(0.99, "EVA: cosine similarity of successive SVD components that stops the iteration",
                          gt=0, le=1)
    corda_method: str = knob("ipm", "CorDA: ipm (instruction-previewed: the adapter holds the principal "
                             "directions the data excites) | kpm (knowledge-preserved: the least excited ones)")
    loftq_bits: int = knob(4, "LoftQ: bits of the quantised base (2, 4 or 8)")
    loftq_iter: int = knob(1, "LoftQ: alternating quantise / low-rank iterations", ge=1)


@dataclass
class DoraConfig(LoraConfig):
    name: str = "dora"


def validate_low_rank(adapter_cfg, run_cfg=None) -> None:
    if adapter_cfg.r < 1:
        fail("adapter.r", adapter_cfg.r, "an integer >= 1")
    if adapter_cfg.alpha <= 0:
        fail("adapter.alpha", adapter_cfg.alpha, "a number > 0")
    if not 0.0 <= adapter_cfg.dropout < 1.0:
        fail("adapter.dropout", adapter_cfg.dropout, "a number in [0, 1)")
    targets = adapter_cfg.target_modules
    if targets is not None and len(targets) == 0:
        fail("adapter.target_modules", list(targets), "a non-empty list of module names, or null")


def validate_lora(adapter_cfg, run_cfg=None) -> None:
    """LoRA/DoRA: the low-rank checks plus peft's catalogue options."""
    validate_low_rank(adapter_cfg, run_cfg)
    ratio = adapter_cfg.lora_plus_ratio
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
        fail("adapter.lora_plus_ratio", ratio, "a number > 0 (the B matrices' lr / lr; LoRA+ uses 2 to 16), or null")
    _check_init(adapter_cfg, run_cfg)
    if run_cfg is None:
        return
    # a target's own refusals (Cerebras: rsLoRA, LoRA+, inits) are its spec's (ftlab.hardware)
    if ratio is not None and shards_parameters(run_cfg.hardware):
        fail("adapter.lora_plus_ratio", ratio, f"null with hardware.strategy={run_cfg.hardware.strategy} (sharded "
             "flattened parameters hide which tensors are B matrices when the optimiser groups are formed; use "
             "hardware=multi_gpu)")


def _check_init(adapter_cfg, run_cfg) -> None:
    init = adapter_cfg.init
    spec = init_spec(init)
    if adapter_cfg.corda_method not in ("ipm", "kpm"):
        fail("adapter.corda_method", adapter_cfg.corda_method, "ipm or kpm")
    if adapter_cfg.loftq_bits not in (2, 4, 8):
        fail("adapter.loftq_bits", adapter_cfg.loftq_bits, "2, 4 or 8 (peft's LoftQ quantisers)")
    if init == "default" or run_cfg is None:
        return
    if spec.needs_cuda and not get_target(run_cfg.hardware.accelerator).cuda:
        fail("adapter.init", init, f"another init with hardware.accelerator={run_cfg.hardware.accelerator} "
             "(peft's loftq_init quantises on a CUDA device only)")
    magnitude = get_adapter(adapter_cfg.name).magnitude  # DoRA's magnitudes
    if spec.data and magnitude:
        fail("adapter.init", init, f"default, gaussian, pissa or olora with adapter=dora (peft's {init} sets A "
             "after DoRA's magnitudes were computed from the placeholder factors)")
    if spec.data and run_cfg.model.quantization:
        fail("adapter.init", init, f"a data-free init with model.quantization={run_cfg.model.quantization} (the "
             f"calibration forward of {init} is not run over a k-bit base in ftlab)")
    if not spec.rewrites_base:
        return
    if magnitude and spec.converts_back:
        fail("adapter.init", init, f"default or gaussian with adapter=dora (peft cannot convert a {init} DoRA "
             "adapter back to the original base for export)")
    if run_cfg.model.quantization:
        fail("adapter.init", init, f"default or gaussian with model.quantization={run_cfg.model.quantization} "
             f"({init} factorises the full-precision weights and writes the residual into the base)")
    if run_cfg.sparsity.method != "none" or run_cfg.sparsity.mask_path:
        fail("adapter.init", init, f"default or gaussian with a sparse base ({init} writes a dense residual "
             "into the pruned weights)")
    if shards_parameters(run_cfg.hardware):
        fail("adapter.init", init, f"default or gaussian with hardware.strategy={run_cfg.hardware.strategy} (the "
             "export converts the adapter against whole initial factors)")


def lora_plus_groups(model: nn.Module, lr: float, weight_decay: float, ratio: float) -> list[dict]:
    """AdamW groups of LoRA+ as peft's ``create_loraplus_optimizer`` forms them: B matrices and
    1-D parameters (DoRA's magnitudes) at ``ratio x lr``, biases among them without decay, the
    rest (A) at ``lr``. Empty groups are left out."""
    a, b, b_no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_B" in name or p.ndim == 1:
            (b_no_decay if "bias" in name else b).append(p)
        else:
            a.append(p)
    groups = [{"params": a, "lr": lr, "weight_decay": weight_decay, "name": "main"},
              {"params": b, "lr": lr * ratio, "weight_decay": weight_decay, "name": "lora_plus_B"},
              {"params": b_no_decay, "lr": lr * ratio, "weight_decay": 0.0, "name": "lora_plus_B_no_decay"}]
    return [g for g in groups if g["params"]]


def peft_config(model: nn.Module, adapter_cfg, run_cfg, *, use_dora: bool) -> PeftLoraConfig:
    """peft's config with the targets resolved against ``model`` (one-line error if none match)."""
    # peft is heavy (~4 s of imports): loaded only when a peft adapter is built
    from peft import LoraConfig as PeftLoraConfig

    linears, experts = split_targets(model, adapter_targets(model, adapter_cfg, run_cfg))
    init = init_spec(getattr(adapter_cfg, "init", None))  # masked LoRA's config has no such key
    return PeftLoraConfig(
        r=adapter_cfg.r,
        lora_alpha=adapter_cfg.alpha,
        lora_dropout=adapter_cfg.dropout,
        # [] = no module (peft's way of adapting parameters only)
        target_modules=peft_target_list(model, linears) if linears else [],
        # fused MoE experts: one rank-r update per expert (peft's ParamWrapper, lora_A/B of r x experts)
        target_parameters=peft_parameter_list(model, experts) if experts else None,
        # GPT-2's Conv1D stores (in, out): peft transposes its delta (``fan_in_fan_out``)
        fan_in_fan_out=bool(linears) and all(is_transposed(model.get_submodule(n)) for n in linears),
        use_dora=use_dora,
        use_rslora=bool(getattr(adapter_cfg, "use_rslora", False)),  # masked LoRA's config has no such key
        init_lora_weights=init.peft_value,
        task_type="CAUSAL_LM",
        **init.peft_options(adapter_cfg),
    )


#: ``store(compute) -> state``: the plan's cached ``init`` step (``ftlab.reuse.cached.cached_init_fn``)
#: returning the stored :func:`~ftlab.adapters.inits.initial_state`, built by ``compute()`` on a miss
InitStore = Callable[[Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]


class PeftLowRank(AdaptedModel):
    use_dora = False

    def __init__(self, model, adapter_cfg, run_cfg, init_store: InitStore | None = None,
                 init_batches: Callable[[], list] | None = None):
        """``init_store``: where an init that is a step of the plan (PiSSA, OLoRA, CorDA, EVA) is
        looked up and stored, ``None`` computes it here; ``init_batches``: the calibration batches
        of a data-driven init (EVA, CorDA), read only when it is computed."""
        config = peft_config(model, adapter_cfg, run_cfg, use_dora=self.use_dora)
        init = init_spec(getattr(adapter_cfg, "init", None))
        if init.data and init_batches is None:
            raise ValueError(f"adapter.init={init.name} reads calibration batches: pass init_batches")
        wrapped = initialised(model, config, init, init_store, init_batches) if init.step else _wrap(model, config)
        super().__init__(wrapped, adapter_cfg, run_cfg)
        self.initial = self._initial_factors()

    def _initial_factors(self) -> Path | None:
        """For an init that rewrote the base (PiSSA, OLoRA): the initial A and B, saved as peft's
        conversion at export needs them (``path_initial_model_for_weight_conversion``); else None."""
        if not init_spec(getattr(self.adapter_cfg, "init", None)).converts_back:
            return None
        directory = Path(tempfile.mkdtemp(prefix="ftlab-initial-adapter-"))
        weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
        config = self.model.peft_config["default"]
        chosen, config.init_lora_weights = config.init_lora_weights, True  # as peft's PiSSA example saves it
        try:
            self.model.save_pretrained(str(directory), safe_serialization=True)
        finally:
            config.init_lora_weights = chosen
        return directory

    def save_adapter(self, directory: Path) -> bool:
        """peft format. After PiSSA/OLoRA, converted to a plain LoRA (rank 2r) on the original base,
        so ``PeftModel.from_pretrained(original base, directory)`` is the trained model."""
        extra = {"path_initial_model_for_weight_conversion": str(self.initial)} if self.initial else {}
        self.model.save_pretrained(str(directory), safe_serialization=True, **extra)
        return True

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """One group, or LoRA+'s groups with ``adapter.lora_plus_ratio`` (:func:`lora_plus_groups`)."""
        ratio = getattr(self.adapter_cfg, "lora_plus_ratio", None)
        if ratio is None:
            return super().param_groups(lr, weight_decay)
        return lora_plus_groups(self.model, lr, weight_decay, float(ratio))

    def merged_model(self):
        """Folds the adapter into the base weights; the peft wrapper is consumed (call last).
        A k-bit base is dequantised first, so the merge does not round the update away."""
        if is_quantized(self.model):
            return dequantized_merge(self.model)
        return self.model.merge_and_unload()


def _wrap(model: nn.Module, config: PeftLoraConfig) -> nn.Module:
    from peft import get_peft_model  # heavy (~4 s of imports): only when a peft adapter is built

    return get_peft_model(model, config)


def initialised(model: nn.Module, config: PeftLoraConfig, init: InitSpec, store: InitStore | None,
                batches: Callable[[], list] | None = None) -> nn.Module:
    """``model`` wrapped by peft with the init of a step. On a miss peft runs the init itself
    (PiSSA's SVD, OLoRA's QR, CorDA's ``preprocess_corda`` then ``get_peft_model``, EVA's
    ``get_eva_state_dict``) and the spec captures its product; on a hit the model is wrapped without
    it (:attr:`InitSpec.bare_on_hit`) and the stored product applied. Either way the process RNG
    is left where it was, so what follows (dropout) draws the same stream on a hit as on a build."""
    built: list[nn.Module] = []

    def compute() -> dict[str, torch.Tensor]:
        data = batches() if init.data else None
        if init.prepare is not None:
            init.prepare(model, config, data)
        built.append(_wrap(model, config))
        return init.capture(built[0], data)

    devices = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=devices):
        state = store(compute) if store is not None else compute()
        if not built:  # a hit (the config keeps peft's name for the init: the export's conversion reads it)
            bare = copy.copy(config)
            if init.bare_on_hit:
                bare.init_lora_weights = False
            built.append(_wrap(model, bare))
            built[0].peft_config["default"].init_lora_weights = init.peft_value
        init.apply(built[0], state)
    return built[0]


class PeftLora(PeftLowRank):
    use_dora = False


class PeftDora(PeftLowRank):
    use_dora = True


register_adapter(AdapterSpec("lora", LoraConfig, PeftLora, validate=validate_lora, low_rank=True, experts=True,
                             supports_quantized_base=True, label="LoRA"))
register_adapter(AdapterSpec("dora", DoraConfig, PeftDora, validate=validate_lora, low_rank=True, magnitude=True,
                             supports_quantized_base=True, label="DoRA",
                             experts_note="peft's LoRA on fused expert parameters has no DoRA magnitude"))
