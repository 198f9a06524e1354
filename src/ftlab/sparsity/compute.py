"""``compute_masks(cfg, model, tokenizer)``: the one entry point that turns a sparsity config into
masks for a model.

It reads the model and never changes it (weights, ``requires_grad`` flags, ``.grad`` and the
train/eval mode are restored), and it writes no files: a training run applies the result, the
masks CLI saves it, and a content-addressed cache may store it under a key of the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ftlab.errors import ConfigError
from ftlab.sparsity import scores as S
from ftlab.sparsity.calibration import calibration_batches, to_device
from ftlab.sparsity.masks import nm_mask, structured_mask, unstructured_masks
from ftlab.sparsity.selection import HeadLayout, head_layout, select_modules


@dataclass(frozen=True)
class MaskSpec:
    """What a mask is, independent of how its scores were obtained."""

    method: str  # unstructured | structured | nm | random
    level: float
    group: str = "layer"
    n: int = 2
    m: int = 4
    structure: str = "channel"

    @property
    def target(self) -> float:
        """The sparsity the mask should achieve (N:M fixes it to n/m)."""
        return self.n / self.m if self.method == "nm" else float(self.level)


def spec_of(sparsity_cfg: Any, level: float | None = None) -> MaskSpec:
    sp = sparsity_cfg
    return MaskSpec(method=sp.method, level=float(sp.level if level is None else level), group=sp.group,
                    n=int(sp.n), m=int(sp.m), structure=sp.structure)


def importance_of(sparsity_cfg: Any) -> str:
    """``method=random`` means random scores whatever ``importance`` says."""
    return "random" if sparsity_cfg.method == "random" else sparsity_cfg.importance


def layouts_for(model: nn.Module, names: dict[str, nn.Linear], spec: MaskSpec) -> dict[str, HeadLayout | None]:
    """Head layout per weight for ``structure=head``; ``None`` (= channels) otherwise."""
    if spec.method != "structured" or spec.structure != "head":
        return {n: None for n in names}
    return {n: head_layout(model.config, n, tuple(lin.weight.shape)) for n, lin in names.items()}


def masks_from_scores(scores: dict[str, torch.Tensor], spec: MaskSpec,
                      layouts: dict[str, HeadLayout | None] | None = None) -> dict[str, torch.Tensor]:
    """Pure: scores -> keep-masks (bool, on the scores' device)."""
    if spec.method in ("unstructured", "random"):
        return unstructured_masks(scores, spec.level, spec.group)
    if spec.method == "nm":
        out = {}
        for name, s in scores.items():
            if s.shape[1] % spec.m:
                raise ConfigError("sparsity.m", spec.m, f"a divisor of the input width of every pruned module; "
                                  f"{name} has {s.shape[1]} columns")
            out[name] = nm_mask(s, spec.n, spec.m)
        return out
    if spec.method == "structured":
        layouts = layouts or {}
        return {name: structured_mask(s, spec.level, layouts.get(name)) for name, s in scores.items()}
    raise ConfigError("sparsity.method", spec.method, "one of ['nm', 'random', 'structured', 'unstructured']")


def compute_masks(cfg: Any, model: nn.Module, tokenizer, level: float | None = None) -> dict[str, torch.Tensor]:
    """Masks ``{weight name: bool keep-mask on CPU}`` for ``cfg.sparsity`` (``level`` overrides it)."""
    sp = cfg.sparsity
    return compute_masks_for_levels(cfg, model, tokenizer, [sp.level if level is None else level])[0]


def compute_masks_for_levels(cfg: Any, model: nn.Module, tokenizer,
                             levels: list[float]) -> list[dict[str, torch.Tensor]]:
    """One mask per level. Scores are computed once for all levels, except Wanda's, which depend
    on the level through the pruned layers feeding the next ones."""
    sp = cfg.sparsity
    specs = [spec_of(sp, level) for level in levels]
    targets = select_modules(model, list(sp.modules))
    layouts = layouts_for(model, targets, specs[0])
    if importance_of(sp) == "wanda":
        batches = calibration_batches(cfg, tokenizer)
        out = [wanda_masks(model, targets, batches, spec, layouts) for spec in specs]
    else:
        scores = importance_scores(cfg, model, tokenizer, targets)
        out = [masks_from_scores(scores, spec, layouts) for spec in specs]
    return [{name: mask.cpu() for name, mask in masks.items()} for masks in out]


def importance_scores(cfg: Any, model: nn.Module, tokenizer, targets: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """Per-weight scores of every importance but Wanda (which needs the layer-by-layer pass)."""
    sp = cfg.sparsity
    importance = importance_of(sp)
    seed = cfg.seed if sp.seed is None else sp.seed
    grads: dict[str, torch.Tensor] = {}
    if importance in S.NEEDS_GRADIENTS:
        grads = accumulate_gradients(model, targets, calibration_batches(cfg, tokenizer))
    scores = {}
    for name, lin in targets.items():
        if importance == "magnitude":
            scores[name] = S.magnitude(lin.weight)
        elif importance == "gradient":
            scores[name] = S.gradient(grads.pop(name))
        elif importance == "taylor":
            scores[name] = S.taylor(lin.weight, grads.pop(name))
        elif importance == "random":
            scores[name] = S.random_scores(tuple(lin.weight.shape), seed, name)
        else:
            raise ConfigError("sparsity.importance", importance, f"one of {list(S.IMPORTANCES)}")
    return scores


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


def accumulate_gradients(model: nn.Module, targets: dict[str, nn.Linear],
                         batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """∇W of the task loss summed over the calibration batches, for the target weights only."""
    device = next(model.parameters()).device
    with _Restore(model):
        for p in model.parameters():
            p.requires_grad_(False)
        weights = {n: lin.weight for n, lin in targets.items()}
        for w in weights.values():
            w.requires_grad_(True)
            w.grad = None
        with torch.enable_grad():
            for batch in batches:
                model(**to_device(batch, device)).loss.backward()
        return {n: w.grad.detach().float().clone() for n, w in weights.items()}


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


def _input_squares(layer: nn.Module, chosen: dict[str, nn.Linear], hidden: list[torch.Tensor],
                   kwargs: list[dict], valid: list[torch.Tensor]) -> dict[str, S.InputSquares]:
    """||X_j||² of every chosen linear of one decoder layer over all calibration batches."""
    stats = {n: S.InputSquares(lin.in_features) for n, lin in chosen.items()}
    current: dict[str, torch.Tensor] = {}

    def hook_for(acc: S.InputSquares):
        return lambda mod, args, out: acc.update(args[0], current["valid"])

    handles = [lin.register_forward_hook(hook_for(stats[n])) for n, lin in chosen.items()]
    try:
        for j, h in enumerate(hidden):
            current["valid"] = valid[j]
            _run_layer(layer, h, kwargs[j])
    finally:
        for handle in handles:
            handle.remove()
    return stats


@torch.no_grad()
def wanda_masks(model: nn.Module, targets: dict[str, nn.Linear], batches: list[dict[str, torch.Tensor]],
                spec: MaskSpec, layouts: dict[str, HeadLayout | None]) -> dict[str, torch.Tensor]:
    """Wanda scores per decoder layer from activations that went through the already pruned
    earlier layers; the model's weights are restored afterwards."""
    prefix, layers = decoder_layers(model)
    per_layer: list[dict[str, nn.Linear]] = [{} for _ in layers]
    for name, lin in targets.items():
        rest = name[len(prefix) + 1:] if name.startswith(prefix + ".") else ""
        index = rest.split(".", 1)[0]
        if not index.isdigit():
            raise ConfigError("sparsity.modules", name.removesuffix(".weight"),
                              "modules inside the decoder layers for importance=wanda")
        per_layer[int(index)][name] = lin
    valid = [b["attention_mask"].reshape(-1).bool() for b in batches]
    masks: dict[str, torch.Tensor] = {}
    with _Restore(model):
        hidden, layer_kwargs = _layer_inputs(model, layers, batches)
        for i, layer in enumerate(layers):
            chosen = per_layer[i]
            if chosen:
                stats = _input_squares(layer, chosen, hidden, layer_kwargs[i], valid)
                scores = {n: S.wanda(lin.weight, stats[n].mean().to(lin.weight.device)) for n, lin in chosen.items()}
                layer_masks = masks_from_scores(scores, spec, layouts)
                masks.update(layer_masks)
                saved = {n: lin.weight.detach().clone() for n, lin in chosen.items()}
                for n, lin in chosen.items():
                    lin.weight.masked_fill_(~layer_masks[n].to(lin.weight.device), 0)
            try:
                hidden = [_run_layer(layer, h, layer_kwargs[i][j]) for j, h in enumerate(hidden)]
            finally:
                if chosen:
                    for n, lin in chosen.items():
                        lin.weight.copy_(saved[n])
    return masks
