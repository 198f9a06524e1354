"""``compute_pruned(cfg, model, tokenizer)``: the one entry point that turns a sparsity config into
a pruned base for a model: keep-masks, SparseGPT's reconstructed weights, OWL's per-layer levels
(``compute_masks`` returns the masks alone).

It reads the model and never changes it (weights, ``requires_grad`` flags, ``.grad`` and the
train/eval mode are restored), and it writes no files: a training run applies the result, the
masks CLI saves it, and a content-addressed cache may store it under a key of the config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ftlab.core.errors import ConfigError
from ftlab.sparsity import scores as S
from ftlab.sparsity.calibration import calibration_batches, to_device
from ftlab.sparsity.experts import ExpertInputs
from ftlab.sparsity.importance import (
    ImportanceSpec,
    ScoreInputs,
    effective_importance,
    get_importance,
    importance_spec,
)
from ftlab.sparsity.masks import assemble_units
from ftlab.sparsity.methods import find_method, get_method
from ftlab.sparsity.owl import outlier_ratio, owl_levels
from ftlab.sparsity.selection import HeadLayout, WeightView, prunable_linears, select_modules, unit_parts
from ftlab.sparsity.sparsegpt import HessianAccumulator, sparsegpt_prune
from ftlab.sparsity.structures import Structure, find_structures


@dataclass(frozen=True)
class MaskSpec:
    """What a mask is, independent of how its scores were obtained."""

    method: str  # a registered mask method (ftlab.sparsity.methods)
    level: float
    group: str = "layer"
    n: int = 2
    m: int = 4
    structure: str = "channel"
    row_floor: bool = False  # per-row count int(cols * level), as Wanda's reference code
    #: ``sparsity.options``: settings of methods from outside ftlab (their spec's config_keys)
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def target(self) -> float:
        """The sparsity the mask should achieve (an N:M method fixes it to n/m)."""
        method = find_method(self.method)
        return self.n / self.m if method is not None and method.needs_n_m else float(self.level)


@dataclass
class PrunedBase:
    """What pruning produces: keep-masks, SparseGPT's reconstructed weights (zeros at pruned
    entries; ``None`` for importances that only select), and OWL's per-weight levels."""

    masks: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None = None
    levels: dict[str, float] | None = None


def importance_of(sparsity_cfg: Any) -> str:
    """The importance the config scores with (:func:`ftlab.sparsity.importance.effective_importance`)."""
    return effective_importance(sparsity_cfg)


def group_of(sparsity_cfg: Any) -> str:
    """The comparison group: the configured one, else each output row for a ``row_group`` score's
    unstructured masks (Wanda's published group) and the layer otherwise."""
    if getattr(sparsity_cfg, "group", None):
        return sparsity_cfg.group
    method = find_method(sparsity_cfg.method)
    row = method is not None and "row" in method.groups and importance_spec(sparsity_cfg).row_group
    return "row" if row else "layer"


def spec_of(sparsity_cfg: Any, level: float | None = None) -> MaskSpec:
    sp = sparsity_cfg
    return MaskSpec(method=sp.method, level=float(sp.level if level is None else level), group=group_of(sp),
                    n=int(sp.n), m=int(sp.m), structure=sp.structure, row_floor=importance_spec(sp).row_group,
                    options=dict(getattr(sp, "options", None) or {}))


def structures_for(model: nn.Module, names: list[str], spec: MaskSpec) -> list[Structure] | None:
    """The whole structures a ``finds_structures`` method prunes (``None`` for other methods)."""
    method = find_method(spec.method)
    return find_structures(model, names, spec.structure) if method is not None and method.finds_structures else None


def layouts_for(model: nn.Module, names: dict[str, WeightView], spec: MaskSpec) -> dict[str, HeadLayout | None]:
    """How each pruned weight splits into structure units (all members of the structures for
    a ``finds_structures`` method); ``None`` for other methods."""
    structures = structures_for(model, list(names), spec)
    if structures is None:
        return {n: None for n in names}
    return {n: st.layout(n) for st in structures for n in st.members}


def masks_from_scores(scores: dict[str, torch.Tensor], spec: MaskSpec, structures: list[Structure] | None = None,
                      levels: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Pure: scores -> keep-masks (bool, on the scores' device). ``levels`` overrides the level
    per weight (OWL); ``structures`` are required for a ``finds_structures`` method. The method's
    spec computes them (:mod:`ftlab.sparsity.methods`)."""
    return get_method(spec.method).masks(scores, spec, structures, levels)


def compute_masks(cfg: Any, model: nn.Module, tokenizer, level: float | None = None) -> dict[str, torch.Tensor]:
    """Masks ``{weight name: bool keep-mask on CPU}`` for ``cfg.sparsity`` (``level`` overrides it)."""
    return compute_pruned(cfg, model, tokenizer, level).masks


def compute_pruned(cfg: Any, model: nn.Module, tokenizer, level: float | None = None) -> PrunedBase:
    """Masks, and for SparseGPT the reconstructed weights, of ``cfg.sparsity``."""
    sp = cfg.sparsity
    return compute_pruned_for_levels(cfg, model, tokenizer, [sp.level if level is None else level])[0]


def compute_masks_for_levels(cfg: Any, model: nn.Module, tokenizer,
                             levels: list[float]) -> list[dict[str, torch.Tensor]]:
    return [p.masks for p in compute_pruned_for_levels(cfg, model, tokenizer, levels)]


def _with_structures(model: nn.Module, targets: dict[str, WeightView],
                     structures: list[Structure] | None) -> dict[str, WeightView]:
    """The selected linears plus the other members of their structures."""
    if structures is None:
        return targets
    units = prunable_linears(model, ["*"])
    return {n: units[n] for st in structures for n in st.members}


def compute_pruned_for_levels(cfg: Any, model: nn.Module, tokenizer, levels: list[float]) -> list[PrunedBase]:
    """One result per level. Scores are computed once for all levels, except the layer-by-layer
    importances (Wanda, SparseGPT), whose later layers see the earlier ones pruned at that level."""
    sp = cfg.sparsity
    importance = importance_spec(sp)
    specs = [spec_of(sp, level) for level in levels]
    selected = select_modules(model, sp.modules)
    structures = structures_for(model, list(selected), specs[0])
    targets = _with_structures(model, selected, structures)
    calibrated = importance.calibrated or sp.allocation == "owl"
    batches = calibration_batches(cfg, tokenizer) if calibrated else []
    ratios = owl_ratios(model, targets, batches, float(sp.owl["threshold_m"])) if sp.allocation == "owl" else None
    out = []
    scores = None if importance.sequential else importance_scores(cfg, model, tokenizer, targets, batches)
    prefix = decoder_layers(model)[0] if ratios is not None else ""
    for spec in specs:
        per_weight = None
        if ratios is not None:  # OWL: one level per decoder layer, mean = spec.level
            by_layer = dict(zip(ratios, owl_levels(list(ratios.values()), spec.level, float(sp.owl["lambda"]))))
            per_weight = {n: by_layer[_layer_index(n, prefix)] for n in targets}
        if scores is None:
            out.append(sequential_prune(model, targets, batches, spec, importance, structures=structures,
                                        levels=per_weight, sparsegpt=sp.sparsegpt, sparsity=sp,
                                        seed=_seed(cfg)))
        else:
            out.append(PrunedBase(masks_from_scores(scores, spec, structures, per_weight), levels=per_weight))
    for p in out:  # units -> masks (and SparseGPT weights) of the parameters' own shapes
        transposed = {v.param_name for v in targets.values() if v.transposed}
        p.masks = assemble_units({name: mask.cpu() for name, mask in p.masks.items()}, transposed)
        if p.weights:
            p.weights = assemble_units(p.weights, transposed)
        if p.levels:
            p.levels = {unit_parts(name)[0]: level for name, level in p.levels.items()}
    return out


def importance_scores(cfg: Any, model: nn.Module, tokenizer, targets: dict[str, WeightView],
                      batches: list[dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """Per-weight scores of every importance but the layer-by-layer ones (``spec.sequential``)."""
    sp = cfg.sparsity
    spec = importance_spec(sp)
    if spec.sequential:
        raise ValueError(f"importance {spec.name} is computed layer by layer (sequential_prune)")
    seed = _seed(cfg)
    grads: dict[str, torch.Tensor] = {}
    if spec.gradients:
        grads = accumulate_gradients(model, targets, batches or calibration_batches(cfg, tokenizer))
    return {name: spec.score(ScoreInputs(name, lin.weight, seed, sp, grad=grads.pop(name, None)))
            for name, lin in targets.items()}


def _seed(cfg: Any) -> int:
    """The seed of seeded scores: ``sparsity.seed``, else the run seed."""
    return cfg.seed if cfg.sparsity.seed is None else cfg.sparsity.seed


# -- gradients (gradient, taylor) ----------------------------------------------------------------
class _Restore:
    """Puts back train mode and ``requires_grad`` flags, and drops ``.grad``, whatever happens."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.training = self.model.training
        self.flags = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        self.model.eval()  # calibration sees the deterministic network (no dropout)
        return self

    def __exit__(self, *exc):
        for p, flag, grad in self.flags:
            p.requires_grad_(flag)
            p.grad = grad
        self.model.train(self.training)
        return False


def accumulate_gradients(model: nn.Module, targets: dict[str, WeightView],
                         batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """∇W of the task loss summed over the calibration batches, for the target weights only."""
    device = next(model.parameters()).device
    with _Restore(model):
        for p in model.parameters():
            p.requires_grad_(False)
        for lin in targets.values():  # an expert's gradient is its slice of the fused parameter's
            lin.param.requires_grad_(True)
            lin.param.grad = None
        with torch.enable_grad():
            for batch in batches:
                model(**to_device(batch, device)).loss.backward()
        return {n: lin.view(lin.param.grad).detach().float().clone() for n, lin in targets.items()}


# -- Wanda: layer by layer, pruned outputs feeding the next layer ------------------------------
class _Stop(Exception):
    pass


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks (the first ``ModuleList`` named ``*layers`` / ``h``), with their name."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h"):
            return name, module
    raise ConfigError("sparsity.importance", "wanda", "a model with a list of decoder layers (*.layers)")


def _layer_inputs(model: nn.Module, layers: nn.ModuleList, batches: list[dict]) -> tuple[list, list[list]]:
    """First layer's hidden states per batch, and every layer's keyword arguments per batch
    (masks and rotary embeddings differ per layer in some architectures, so each is recorded)."""
    device = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    kwargs: list[list[dict]] = [[] for _ in layers]

    def recorder(i):
        def hook(module, args, kw):
            if i == 0:
                hidden.append(args[0] if args else kw["hidden_states"])
            kwargs[i].append({k: v for k, v in kw.items() if k != "hidden_states"})
            if i == len(layers) - 1:
                raise _Stop
        return hook

    handles = [layer.register_forward_pre_hook(recorder(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for batch in batches:
            try:
                model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                      use_cache=False)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return hidden, kwargs


def _run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _feed(chosen: dict[str, WeightView], make: Callable[[WeightView], Any],
          passes: Iterable[tuple[torch.Tensor, Callable[[], object]]]) -> dict[str, Any]:
    """Run each forward pass, feeding each chosen linear's inputs (the real tokens its ``valid``
    mask marks) to its accumulator ``make(linear)`` (Wanda's ‖X_j‖², SparseGPT's H); an expert's
    accumulator gets the real tokens routed to it (:class:`ftlab.sparsity.experts.ExpertInputs`)."""
    stats = {n: make(lin) for n, lin in chosen.items()}
    current: dict[str, torch.Tensor] = {}

    def hook_for(acc):
        return lambda mod, args, out: acc.update(args[0], current["valid"])

    experts = {(id(lin.param), lin.expert): stats[n] for n, lin in chosen.items() if lin.expert is not None}
    handles = [lin.module.register_forward_hook(hook_for(stats[n])) for n, lin in chosen.items()
               if lin.expert is None]
    tap = ExpertInputs([lin.param for lin in chosen.values() if lin.expert is not None],
                       [lin.module for lin in chosen.values() if lin.expert is not None],
                       lambda param, e, x: experts[(id(param), e)].update(x) if (id(param), e) in experts else None,
                       lambda: current.get("valid"))
    try:
        with tap if experts else contextlib.nullcontext():
            for valid, forward in passes:
                current["valid"] = valid
                forward()
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _collect(layer: nn.Module, chosen: dict[str, WeightView], hidden: list[torch.Tensor], kwargs: list[dict],
             valid: list[torch.Tensor], make: Callable[[WeightView], Any]) -> dict[str, Any]:
    """One decoder layer run over its captured inputs of all calibration batches (:func:`_feed`)."""
    return _feed(chosen, make, ((valid[j], lambda h=h, kw=kwargs[j]: _run_layer(layer, h, kw))
                                for j, h in enumerate(hidden)))


@torch.no_grad()
def input_stats(model: nn.Module, linears: dict[str, WeightView], batches: list[dict[str, torch.Tensor]],
                make: Callable[[WeightView], Any]) -> dict[str, Any]:
    """Each linear's input statistics (``make(linear)``, :func:`_feed`) from whole-model forwards
    of the model as it is now, not layer by layer: the reference a benchmark or test compares the
    layer-by-layer statistics with (e.g. the dense model's Hessians)."""
    return _feed(linears, make, ((b["attention_mask"].reshape(-1).bool(),
                                  lambda b=b: model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]))
                                 for b in batches))


def _input_squares(lin: WeightView) -> S.InputSquares:
    return S.InputSquares(lin.in_features)


def _hessian(lin: WeightView) -> HessianAccumulator:
    return HessianAccumulator(lin.in_features, lin.weight.device)


def _input_norms(acc: S.InputSquares) -> torch.Tensor:
    """Wanda's ||X_j||²; an expert no calibration token was routed to gets ones, i.e. its
    magnitudes alone (all-zero norms would rank every weight equal and prune by position)."""
    return acc.mean() if acc.count else torch.ones_like(acc.mean())


def _hessian_of(acc: HessianAccumulator) -> torch.Tensor:
    """SparseGPT's H; the identity for an expert no calibration token reached (magnitude pruning
    without reconstruction, rather than zeroing every column as inputs that never fire)."""
    return acc.H if acc.count else torch.eye(acc.H.shape[0], dtype=acc.H.dtype, device=acc.H.device)


def _layer_index(name: str, prefix: str) -> int:
    rest = name[len(prefix) + 1:] if name.startswith(prefix + ".") else ""
    index = rest.split(".", 1)[0]
    if not index.isdigit():
        raise ConfigError("sparsity.modules", name.removesuffix(".weight"),
                          "modules inside the decoder layers for a layer-by-layer importance (wanda, sparsegpt) "
                          "or allocation=owl")
    return int(index)


def _per_layer(model: nn.Module, targets: dict[str, WeightView]) -> tuple[nn.ModuleList, list[dict[str, WeightView]]]:
    prefix, layers = decoder_layers(model)
    per_layer: list[dict[str, WeightView]] = [{} for _ in layers]
    for name, lin in targets.items():
        per_layer[_layer_index(name, prefix)][name] = lin
    return layers, per_layer


@torch.no_grad()
def owl_ratios(model: nn.Module, targets: dict[str, WeightView], batches: list[dict[str, torch.Tensor]],
               threshold_m: float) -> dict[int, float]:
    """OWL's outlier ratio of every decoder layer holding pruned linears, from Wanda scores on
    inputs through the unpruned model (as the public code computes them)."""
    layers, per_layer = _per_layer(model, targets)
    valid = [b["attention_mask"].reshape(-1).bool() for b in batches]
    ratios: dict[int, float] = {}
    with _Restore(model):
        hidden, layer_kwargs = _layer_inputs(model, layers, batches)
        for i, layer in enumerate(layers):
            chosen = per_layer[i]
            if chosen:
                stats = _collect(layer, chosen, hidden, layer_kwargs[i], valid, _input_squares)
                ratios[i] = outlier_ratio([S.wanda(lin.weight, _input_norms(stats[n]).to(lin.weight.device))
                                           for n, lin in chosen.items()], threshold_m)
            hidden = [_run_layer(layer, h, layer_kwargs[i][j]) for j, h in enumerate(hidden)]
    return ratios


@torch.no_grad()
def sequential_prune(model: nn.Module, targets: dict[str, WeightView], batches: list[dict[str, torch.Tensor]],
                     spec: MaskSpec, importance: str | ImportanceSpec = "wanda", *,
                     structures: list[Structure] | None = None, levels: dict[str, float] | None = None,
                     sparsegpt: Any = None, sparsity: Any = None, seed: int = 0) -> PrunedBase:
    """A ``sequential`` importance (Wanda, SparseGPT) decoder layer by decoder layer: each layer's
    statistics come from activations that went through the already pruned (reconstructed, for a
    ``reconstructs_weights`` spec) earlier layers, as in both reference implementations. The
    model's weights are restored afterwards."""
    score = importance if isinstance(importance, ImportanceSpec) else get_importance(importance)
    layers, per_layer = _per_layer(model, targets)
    valid = [b["attention_mask"].reshape(-1).bool() for b in batches]
    masks: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    with _Restore(model):
        hidden, layer_kwargs = _layer_inputs(model, layers, batches)
        for i, layer in enumerate(layers):
            chosen = per_layer[i]
            saved = {n: lin.weight.detach().clone() for n, lin in chosen.items()}
            try:
                if chosen:
                    if score.reconstructs_weights:
                        new = _sparsegpt_layer(layer, chosen, hidden, layer_kwargs[i], valid, spec, levels, sparsegpt)
                        for n, (w, keep) in new.items():
                            masks[n] = keep
                            weights[n] = w.to(chosen[n].weight.dtype).cpu()
                            chosen[n].weight.copy_(w.to(chosen[n].weight))
                    else:
                        stats = _collect(layer, chosen, hidden, layer_kwargs[i], valid, _input_squares)
                        scores = {n: score.score(ScoreInputs(n, lin.weight, seed, sparsity,
                                                             input_sq_mean=_input_norms(stats[n]).to(lin.weight.device)))
                                  for n, lin in chosen.items()}
                        inside = [st for st in structures or [] if set(st.members) <= set(chosen)]
                        layer_masks = masks_from_scores(scores, spec, inside if structures else None,
                                                        {n: levels[n] for n in chosen} if levels else None)
                        masks.update(layer_masks)
                        for n, lin in chosen.items():
                            lin.weight.masked_fill_(~layer_masks[n].to(lin.weight.device), 0)
                hidden = [_run_layer(layer, h, layer_kwargs[i][j]) for j, h in enumerate(hidden)]
            finally:
                for n, lin in chosen.items():
                    lin.weight.copy_(saved[n])
    return PrunedBase(masks, weights or None, levels)


def wanda_masks(model: nn.Module, targets: dict[str, WeightView], batches: list[dict[str, torch.Tensor]],
                spec: MaskSpec, structures: list[Structure] | None = None) -> dict[str, torch.Tensor]:
    """Wanda's masks (:func:`sequential_prune`)."""
    return sequential_prune(model, targets, batches, spec, "wanda", structures=structures).masks


def _sparsegpt_layer(layer: nn.Module, chosen: dict[str, WeightView], hidden: list[torch.Tensor], kwargs: list[dict],
                     valid: list[torch.Tensor], spec: MaskSpec, levels: dict[str, float] | None,
                     options: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Hessians of every chosen linear from the same layer inputs, then prune + reconstruct each."""
    stats = _collect(layer, chosen, hidden, kwargs, valid, _hessian)
    blocksize = int(options.blocksize) if options is not None else 128
    percdamp = float(options.percdamp) if options is not None else 0.01
    nm = get_method(spec.method).needs_n_m
    out = {}
    for n, lin in chosen.items():
        level = levels[n] if levels else spec.level
        out[n] = sparsegpt_prune(lin.weight, _hessian_of(stats[n]), level, n=spec.n if nm else 0, m=spec.m if nm else 0,
                                 blocksize=blocksize, percdamp=percdamp)
        stats[n] = None  # free the Hessian before the next linear's
    return out
