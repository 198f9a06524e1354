"""The random draws a base model makes by itself in training mode: its own dropout (modules and
the probabilities its attention kernels and residual adds take as floats) and MoE router jitter.

A solo run draws them for its own batch from the process RNG. Fused trials (``ftlab.fused``)
run one forward of the frozen base over every trial's rows: those draws would come from one
stream over the concatenated batch, so no trial would get the draws of its solo run. Such a
base cannot be shared, and the fused launcher needs the reason before it builds anything.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.dropout import _DropoutNd

#: config attributes whose name ends so are probabilities (or a jitter scale) the model's forward
#: applies itself in training mode (Llama's ``attention_dropout``, GPT-2's ``resid_pdrop``, Falcon's
#: ``hidden_dropout``, Mixtral's ``router_jitter_noise``, BERT's ``attention_probs_dropout_prob``)
NOISE_SUFFIXES = ("dropout", "pdrop", "dropout_prob", "jitter_noise")
#: ... except those of task heads a causal LM does not run (GPT-2's sequence-summary head,
#: classifier heads)
HEAD_PREFIXES = ("summary_", "classifier_")


def config_noise(config: Any) -> dict[str, float]:
    """``name -> value`` of the config's training-mode noise settings that are above 0."""
    found: dict[str, float] = {}
    for key, value in sorted(config.to_dict().items()):
        if not key.endswith(NOISE_SUFFIXES) or key.startswith(HEAD_PREFIXES):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            found[key] = float(value)
    return found


def module_noise(model: nn.Module) -> dict[str, float]:
    """``module name -> p`` of the model's dropout modules with ``p > 0``."""
    return {name: float(m.p) for name, m in model.named_modules() if isinstance(m, _DropoutNd) and m.p > 0}


def base_noise(model: nn.Module) -> dict[str, float]:
    """The config's noise settings, then dropout modules the config does not explain (a model
    whose modules were built with their own ``p``); empty for a deterministic forward."""
    found = config_noise(model.config) if hasattr(model, "config") else {}
    modules = module_noise(model)
    if modules and not found:
        found.update(modules)
    return found


def describe(noise: dict[str, float], limit: int = 3) -> str:
    """``a=0.1, b=0.1, ... (+N more)`` for a one-line message."""
    items = [f"{k}={v:g}" for k, v in noise.items()]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
