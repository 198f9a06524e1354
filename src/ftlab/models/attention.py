"""Which attention implementation a model is built with: the configured one where its class has it.

transformers refuses an explicit ``attn_implementation`` that the model class has no path for
(Bloom, BigBird, CPM-Ant... have no ``sdpa``; most classes have no flash kernel) with a multi-line
``ValueError`` at build time. ``model.attn_implementation`` defaults to ``sdpa``, so a user who
never chose it would get that traceback. Here the class's own capability flags decide before
anything is built: ``sdpa`` falls back to ``eager`` (the path every class has, and exactly what
transformers itself picks when no implementation is requested), said in one console line; an
explicit ``flash_attention_2`` the class lacks is refused in one line naming the key, because
silently running another kernel would change the memory and speed the user asked for.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from ftlab.core.errors import fail

log = logging.getLogger("ftlab")

#: the implementation every transformers model class has
FALLBACK = "eager"
#: implementation -> the class flag that says whether the class has it
FLAGS = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}


def causal_lm_class(config: Any) -> type | None:
    """The ``AutoModelForCausalLM`` class of a transformers config, ``None`` if it has none."""
    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return None


def has_implementation(cls: type, impl: str) -> bool | None:
    """Whether ``cls`` has ``impl``: its class flag, or ``None`` where the flag is computed per
    instance (a property) and only transformers can tell after building."""
    flag = FLAGS.get(impl)
    if flag is None:
        return True  # eager: every class
    value = inspect.getattr_static(cls, flag, False)
    return value if isinstance(value, bool) else None


def resolve_attention(config: Any, requested: str, *, say: bool = True) -> str:
    """The implementation to build ``config``'s model with (see the module doc); ``say``: print the
    fallback line (a real build says it; the preflight's meta-device build stays silent)."""
    cls = causal_lm_class(config)
    if cls is None or has_implementation(cls, requested) is not False:
        return requested
    if requested == "sdpa":
        if say:
            log.warning("model.attn_implementation=sdpa: %s has no sdpa attention in transformers; using %s",
                        cls.__name__, FALLBACK)
        return FALLBACK
    have = [impl for impl in ("sdpa", FALLBACK) if has_implementation(cls, impl) is not False]
    fail("model.attn_implementation", requested, f"one that {cls.__name__} has in transformers: {have}")
    return requested  # unreachable: fail raises
