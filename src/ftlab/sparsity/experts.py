"""The calibration inputs of one expert: the tokens the router sent to it.

A fused experts module (transformers 5: Mixtral, Qwen2-MoE, Qwen3-MoE) has no per-expert module to
hook, so the input of expert ``e``'s ``gate_up_proj`` (its routed tokens) and ``down_proj`` (their
gated activations) are taken where the experts' eager forward passes them: the ``F.linear`` call
whose weight is the slice ``param[e]`` (found by the slice's storage offset). While a
:class:`ExpertInputs` is active the experts run their eager forward (the grouped kernels never
call ``F.linear``), and padding tokens are routed to no expert: transformers' experts skip the
index ``num_experts`` (the slot expert parallelism uses for tokens of other ranks), so only real
tokens reach the statistics, as for every other layer (Wanda's ‖X_j‖², SparseGPT's H).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

#: (parameter, expert index, input rows) -> None
Sink = Callable[[nn.Parameter, int, torch.Tensor], None]


class ExpertInputs(TorchFunctionMode):
    """Context: every ``F.linear`` on one expert's slice of a watched parameter is reported to
    ``sink``; the watched experts modules run eagerly with padding routed nowhere (see above).

    ``valid`` is read at each experts call: a callable returning the current pass's flattened
    attention mask (``None``: every token is real)."""

    def __init__(self, params: list[nn.Parameter], modules: list[nn.Module], sink: Sink,
                 valid: Callable[[], torch.Tensor | None]):
        super().__init__()
        self.params = {id(p): p for p in params}
        self.modules = list(dict.fromkeys(modules))
        self.sink = sink
        self.valid = valid
        self._handles: list[Any] = []
        self._impl: list[tuple[Any, Any]] = []

    def _route_padding(self, module: nn.Module, args: tuple, kwargs: dict):
        valid = self.valid()
        if valid is None or len(args) < 2:
            return None
        top_k = args[1]
        if top_k.shape[0] != valid.numel():
            return None
        routed = top_k.masked_fill(~valid.to(top_k.device).bool().reshape(-1, 1), int(module.num_experts))
        return (args[0], routed, *args[2:]), kwargs

    def __enter__(self):
        for module in self.modules:
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_experts_implementation"):
                self._impl.append((config, config._experts_implementation))
                config._experts_implementation = "eager"
            self._handles.append(module.register_forward_pre_hook(self._route_padding, with_kwargs=True))
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        for config, impl in reversed(self._impl):
            config._experts_implementation = impl
        self._handles, self._impl = [], []
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and len(args) >= 2:
            weight = args[1]
            base = getattr(weight, "_base", None)
            param = self.params.get(id(base)) if base is not None else None
            if param is not None:
                expert = (weight.storage_offset() - param.storage_offset()) // param.stride(0)
                self.sink(param, int(expert), args[0])
        return func(*args, **kwargs)
