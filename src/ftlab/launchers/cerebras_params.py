"""Translate one composed ftlab run config into a Cerebras ModelZoo trainer YAML (``cszoo fit``).

The translation is a pure function of the config (plus the launcher's options), so it is tested
field by field and runs identically in a dry run. What maps where:

- ``model``    -> ``trainer.init.model`` (ModelZoo's llama / mistral / mixtral), dimensions read from
  the same transformers config ftlab builds the model from, so both describe one architecture.
- ``schedule`` -> ``trainer.init.schedulers``: ConstantLR / LinearLR / CosineDecayLR, chained with
  SequentialLR; the warm-up is written so that the lr of every step equals ftlab's ``lr_at``
  (:func:`cerebras_lr` evaluates the emitted schedule; tests compare the two step by step).
- ``train``    -> optimizer (AdamW), loop, checkpoint and logging steps; ``precision`` from
  ``hardware.precision`` with ``train.gradient_clip_val`` as ``max_gradient_norm``; the train
  dataloader's ``batch_size`` is the *global* batch (ftlab's per-device batch x accumulation x
  devices), which ModelZoo splits across the CS-X systems.
- ``sparsity`` -> the ``sparsity`` block: level, ``static`` (one mask, as ftlab) or ``gmp``
  (reaching the level at the last mask update, :func:`gmp_levels`), ``init_method`` topk
  (magnitude) or random, and ``param_filter`` globs: ModelZoo's names of the weights ftlab would
  prune, from the table in :mod:`ftlab.launchers.cerebras_names` (layer indices replaced by ``*``).
  A frozen base (LoRA, masked LoRA) gets no ``sparsity`` block: ModelZoo 2.10 cannot keep masks on
  weights outside its optimiser, so the same block masks the base checkpoint once before the run
  (:func:`base_mask`, :mod:`ftlab.launchers.cerebras_mask_base`) and the frozen zeros stay zeros.
- ``adapter``  -> the ``Lora`` callback (lora, masked), one ``lora_params`` entry per group of
  target modules, named by ModelZoo class (:func:`~ftlab.launchers.cerebras_names.lora_target_groups`),
  or nothing (full). With ``adapter=masked`` the base weights are masked but ModelZoo's LoRA update
  is dense: the merged model keeps the base mask only when the mask is applied again at merge
  (ftlab's masked merge does).
- the base weights: ``cszoo fit --checkpoint_path`` (given, or converted from ``model.name_or_path``,
  :mod:`ftlab.launchers.cerebras_steps`); loading is non-strict where the checkpoint cannot hold
  what the run adds (LoRA weights, sparsity masks), as ModelZoo's ``SparsityCallback`` requires.

Precision lives only in ``trainer.init.precision``: ModelZoo 2.10's model configs forbid extra keys
and its v1->v2 converter drops ``model.mixed_precision`` / ``model.fp16_type``.

Anything without a faithful Cerebras equivalent fails in :func:`check_supported` with one line
naming the option, before any job is launched.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import OmegaConf

from ftlab.adapters.params import model_facts, trainable_params
from ftlab.adapters.registry import get_adapter
from ftlab.adapters.targets import requested_targets
from ftlab.core.errors import ConfigError
from ftlab.launchers.cerebras_adapters import cerebras_adapters, cerebras_refusal, lora_on_cerebras
from ftlab.launchers.cerebras_names import (
    MODELZOO_MODELS,
    UNSUPPORTED_ARCHS,
    lora_target_groups,
    param_globs,
)
from ftlab.launchers.cerebras_options import SPARSITY_ALGORITHMS
from ftlab.launchers.cerebras_steps import JobPlan, check_base, global_batch
from ftlab.models import build_model, build_tokenizer
from ftlab.models.build import model_config
from ftlab.models.structure import decoder_linears, leaf_names
from ftlab.sparsity.importance import effective_importance
from ftlab.sparsity.methods import all_methods, get_method
from ftlab.sparsity.selection import select_modules
from ftlab.training.schedules import total_steps

#: ftlab ``model.arch`` -> ModelZoo model name.
ARCHS = MODELZOO_MODELS
#: ``hardware.precision`` each ModelZoo backend (``hydra.launcher.target_device``) runs as written,
#: from ModelZoo 2.10's ``MixedPrecision.pre_setup``: a CS-X always runs mixed precision (float32 =
#: "enabled: false" becomes bfloat16), cbfloat16 exists on a CS-X only and the CPU backend's half
#: type is bfloat16 only (anything else becomes bfloat16 there, with a warning in cszoo's log).
PRECISIONS = {"CSX": ("cbfloat16", "bfloat16", "float16"), "CPU": ("bfloat16", "float32"),
              "GPU": ("bfloat16", "float16", "float32")}
#: ftlab importance -> ModelZoo sparsity ``init_method``.
INIT_METHODS = {"magnitude": "topk", "random": "random"}


def _lora_on_cerebras(adapter: str) -> bool:
    return lora_on_cerebras(get_adapter(adapter))


def _get(node: Any, key: str, default: Any = None) -> Any:
    return OmegaConf.select(node, key, default=default) if OmegaConf.is_config(node) else getattr(node, key, default)


# ---------------------------------------------------------------------------- support checks
def check_supported(cfg: Any, opts: Any, *, launching: bool = True) -> None:
    """Raise :class:`ConfigError` naming the first option Cerebras cannot run as configured."""
    h = cfg.hardware
    if h.accelerator != "cerebras":
        raise ConfigError("hardware", h.name, "hardware=cerebras with hydra/launcher=cerebras")
    device = str(opts.target_device)
    if device not in PRECISIONS:
        raise ConfigError("hydra.launcher.target_device", device, f"one of {list(PRECISIONS)} (cszoo's backends)")
    if str(h.precision) not in PRECISIONS[device]:
        raise ConfigError("hardware.precision", h.precision,
                          f"one of {list(PRECISIONS[device])} with hydra.launcher.target_device={device} (ModelZoo's "
                          "MixedPrecision would silently run bfloat16 mixed precision instead)")
    num_csx = opts.num_csx if opts.num_csx is not None else h.num_csx
    if num_csx < 1:
        raise ConfigError("hydra.launcher.num_csx" if opts.num_csx is not None else "hardware.num_csx",
                          num_csx, "an integer >= 1")
    name = cfg.adapter.name
    spec = get_adapter(name)
    why = cerebras_refusal(spec)
    if why is not None:
        raise ConfigError("adapter", name, f"one of {cerebras_adapters()} on Cerebras: {why}")
    if cfg.model.arch not in ARCHS:
        why = UNSUPPORTED_ARCHS.get(cfg.model.arch, "ModelZoo models ftlab translates")
        raise ConfigError("model.arch", cfg.model.arch, f"one of {sorted(ARCHS)} on Cerebras ({why})")
    rope = _get(cfg.model.config, "rope_scaling") or {}
    if rope and _get(rope, "rope_type", _get(rope, "type")) not in (None, "default"):
        raise ConfigError("model.config.rope_scaling", OmegaConf.to_container(rope) if OmegaConf.is_config(rope)
                          else rope, "null on Cerebras (ftlab does not translate RoPE scaling)")
    if cfg.base.enabled:
        raise ConfigError("base.enabled", True, "false on Cerebras (pre-train the base as its own cszoo run)")
    if cfg.logger.name != "csv":
        raise ConfigError("logger", cfg.logger.name, "csv on Cerebras (loss_log.csv is converted from cszoo's logs)")
    _check_sparsity(cfg.sparsity, opts)
    if opts.sparsity_algorithm == "gmp" and cfg.sparsity.method != "none" and _lora_on_cerebras(name):
        raise ConfigError("hydra.launcher.sparsity_algorithm", "gmp",
                          f"static with adapter={name} (ModelZoo's GMP updates only masks of weights that get "
                          "gradients, and LoRA freezes the base: the masks would never change)")
    if opts.val_data_dir and not opts.train_data_dir:
        raise ConfigError("hydra.launcher.val_data_dir", opts.val_data_dir,
                          "null unless hydra.launcher.train_data_dir is set (else both splits are preprocessed "
                          "from the task)")
    names = opts.module_names
    if names is not None and not (isinstance(names, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                  for k, v in names.items())):
        raise ConfigError("hydra.launcher.module_names", names,
                          "null or a dict {HF module: ModelZoo module path inside a decoder layer}")
    check_base(cfg, opts, launching=launching)
    # What only the translation finds (LoRA groups, unmapped weights, a gmp schedule without updates)
    # must also stop the sweep before launch: translate the parts that can fail.
    lora_callback(cfg, model_block(cfg))
    sparsity_block(cfg, opts, _step_count(cfg.schedule, cfg.train.max_steps))


def _check_sparsity(s: Any, opts: Any) -> None:
    if opts.sparsity_algorithm not in SPARSITY_ALGORITHMS:
        raise ConfigError("hydra.launcher.sparsity_algorithm", opts.sparsity_algorithm,
                          f"one of {list(SPARSITY_ALGORITHMS)}")
    if opts.sparsity_update_freq < 1:
        raise ConfigError("hydra.launcher.sparsity_update_freq", opts.sparsity_update_freq, "an integer >= 1")
    if s.mask_path:
        raise ConfigError("sparsity.mask_path", s.mask_path, "null on Cerebras (masks are computed on the appliance)")
    if s.method == "none":
        return
    method = get_method(s.method)
    if not method.elementwise:  # ModelZoo's sparsity prunes single weights of each tensor, nothing else
        allowed = ", ".join(["none", *(m.name for m in all_methods() if m.elementwise)])
        raise ConfigError("sparsity.method", s.method,
                          f"{allowed} on Cerebras (its sparsity is unstructured per tensor)")
    if effective_importance(s) not in INIT_METHODS:
        raise ConfigError("sparsity.importance", s.importance,
                          f"one of {sorted(INIT_METHODS)} on Cerebras (no calibration data on the appliance)")
    if s.group not in (None, "layer"):  # None: layer (importance is not wanda)
        raise ConfigError("sparsity.group", s.group, "layer on Cerebras (topk ranks each weight tensor on its own)")


# ---------------------------------------------------------------------------- schedules
def _step_count(schedule_cfg: Any, max_steps: int) -> int:
    return total_steps(schedule_cfg, max_steps)


def schedulers(schedule_cfg: Any, max_steps: int) -> list[dict]:
    """ModelZoo schedulers whose lr at every step equals ftlab's ``lr_at``."""
    name, lr = schedule_cfg.name, float(schedule_cfg.lr)
    if name == "stages":
        parts = [{"ConstantLR": {"learning_rate": float(st.lr), "total_iters": int(st.iters)}}
                 for st in schedule_cfg.stages]
        return _chain(parts)
    warmup = int(schedule_cfg.warmup_steps)
    parts = []
    if warmup:
        # ftlab: lr * (step + 1) / warmup for step < warmup. A LinearLR over `warmup` iters from
        # lr/warmup towards lr*(warmup+1)/warmup hits exactly those values (its end is never used).
        parts.append({"LinearLR": {"initial_learning_rate": lr / warmup,
                                   "end_learning_rate": lr * (warmup + 1) / warmup, "total_iters": warmup}})
    span = max(1, max_steps - warmup)
    floor = lr * float(schedule_cfg.min_lr_ratio)
    if name == "constant":
        parts.append({"ConstantLR": {"learning_rate": lr}})
    elif name == "cosine":
        parts.append({"CosineDecayLR": {"initial_learning_rate": lr, "end_learning_rate": floor, "total_iters": span}})
    elif name == "linear":
        parts.append({"LinearLR": {"initial_learning_rate": lr, "end_learning_rate": floor, "total_iters": span}})
    else:
        raise ConfigError("schedule.name", name, "one of ['constant', 'cosine', 'linear', 'stages']")
    return _chain(parts)


def _chain(parts: list[dict]) -> list[dict]:
    return parts if len(parts) == 1 else [{"SequentialLR": {"schedulers": parts}}]


def cerebras_lr(scheds: list[dict], step: int) -> float:
    """The lr ModelZoo's schedulers give at ``step`` (0-based), for the kinds :func:`schedulers`
    emits: a segment runs ``total_iters`` steps, the last one forever; inside a segment ``t`` counts
    from 0; LinearLR interpolates, CosineDecayLR follows half a cosine, both hold their end value."""
    (only,) = scheds
    kind, args = next(iter(only.items()))
    if kind == "SequentialLR":
        segs = args["schedulers"]
        for i, seg in enumerate(segs):
            iters = next(iter(seg.values())).get("total_iters")
            if i == len(segs) - 1 or iters is None or step < iters:
                return cerebras_lr([seg], step)
            step -= iters
    if kind == "ConstantLR":
        return float(args["learning_rate"])
    t = min(step, args["total_iters"]) / args["total_iters"]
    a, b = float(args["initial_learning_rate"]), float(args["end_learning_rate"])
    if kind == "LinearLR":
        return a + (b - a) * t
    if kind == "CosineDecayLR":
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown scheduler {kind!r}")


# ---------------------------------------------------------------------------- model
def _hf_config(model_cfg: Any):
    tokenizer = build_tokenizer(model_cfg) if model_cfg.tokenizer == "byte" else None
    return model_config(model_cfg, tokenizer)


def model_block(cfg: Any) -> dict:
    """ModelZoo model params of the architecture ftlab would build."""
    m = _hf_config(cfg.model)
    heads = m.num_attention_heads
    kv = getattr(m, "num_key_value_heads", None) or heads
    head_dim = getattr(m, "head_dim", None) or m.hidden_size // heads
    rope = getattr(m, "rope_theta", None) or (getattr(m, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    bias = bool(getattr(m, "attention_bias", False))
    if getattr(m, "hidden_act", "silu") != "silu":
        raise ConfigError("model.config.hidden_act", m.hidden_act, "silu on Cerebras (ModelZoo's swiglu)")
    block: dict[str, Any] = {
        "name": ARCHS[cfg.model.arch],
        "vocab_size": int(m.vocab_size),
        "hidden_size": int(m.hidden_size),
        "num_hidden_layers": int(m.num_hidden_layers),
        "num_heads": int(heads),
        "filter_size": int(m.intermediate_size),
        "max_position_embeddings": int(m.max_position_embeddings),
        "position_embedding_type": "rotary",
        "rotary_dim": int(head_dim),
        "rope_theta": float(rope),
        "norm_type": "rmsnorm",
        "layer_norm_epsilon": float(m.rms_norm_eps),
        "nonlinearity": "swiglu",
        "attention_type": "scaled_dot_product",
        "attention_module": "multiquery_attention" if kv != heads else "aiayn_attention",
        "use_projection_bias_in_attention": bias,
        "use_ffn_bias_in_attention": bias,
        "use_ffn_bias": bool(getattr(m, "mlp_bias", False)),
        "use_bias_in_output": False,
        "share_embedding_weights": bool(m.tie_word_embeddings),
        "dropout_rate": 0.0,
        "embedding_dropout_rate": 0.0,
        "attention_dropout_rate": float(getattr(m, "attention_dropout", 0.0) or 0.0),
    }
    if kv != heads:
        block["extra_attention_params"] = {"num_kv_groups": int(kv)}
    window = getattr(m, "sliding_window", None)
    if cfg.model.arch in ("mistral", "mixtral") and window:
        block["attention_sliding_window_length"] = int(window)
    if cfg.model.arch == "mixtral" and getattr(m, "output_router_logits", False):
        raise ConfigError("model.config.output_router_logits", True,
                          "false on Cerebras (transformers' router aux loss and ModelZoo's load_balancing_loss "
                          "normalise differently; ftlab does not translate one into the other)")
    if cfg.model.arch == "mixtral":
        # "optimized": the fused-expert layout cszoo checkpoint convert writes (mixtral.py
        # moe_optimized_impl_rules); ModelZoo 2.10's default ("experimental") names the experts
        # differently, so a converted base would not load into it.
        # load_balancing_loss_coef: 0, as ftlab's own training (transformers adds its router aux loss
        # only with output_router_logits, refused above); ModelZoo's converter copies router_aux_loss_coef.
        block["moe"] = {"num_experts": int(m.num_local_experts), "top_k": int(m.num_experts_per_tok),
                        "load_balancing_loss_coef": 0.0, "moe_implementation": "optimized"}
    return block


# ---------------------------------------------------------------------------- adapter, sparsity
def lora_callback(cfg: Any, model: dict) -> dict | None:
    """ModelZoo's ``Lora`` callback: one ``lora_params`` entry per group of target modules."""
    a = cfg.adapter
    if not _lora_on_cerebras(a.name):  # full fine-tuning: no callback
        return None
    targets = lora_target_names(cfg)
    key = "adapter.target_modules" if a.target_modules is not None else "model.target_modules"
    groups = lora_target_groups(cfg.model.arch, model["attention_module"], targets, key)
    _check_lora_coverage(cfg, targets, key)
    return {"Lora": {"lora_params": [{
        "r": int(a.r),
        "alpha": float(a.alpha),
        "dropout": float(_get(a, "dropout", 0.0)),
        "target_modules": group,
        "merge_weights": False,
    } for group in groups]}}


def _check_lora_coverage(cfg: Any, targets: list[str], key: str) -> None:
    """ModelZoo's ``Lora`` callback converts ``nn.Linear`` modules of the decoder only: the LoRA
    parameters it adds (r x (in + out) per targeted linear) must be what ftlab's own run trains (the
    planner's count), else a target ftlab adapts (e.g. fused MoE experts) would silently stay frozen."""
    facts = model_facts(cfg.model)
    leaves = {str(t).rsplit(".", 1)[-1] for t in targets}
    blocks = set(facts.default_targets)
    r = int(cfg.adapter.r)
    modelzoo = sum(r * (i + o) for name, i, o in facts.linears if name in blocks and name.rsplit(".", 1)[-1] in leaves)
    ftlab = trainable_params(facts, cfg)
    if modelzoo != ftlab:
        value = OmegaConf.to_container(cfg.adapter.target_modules) if cfg.adapter.target_modules is not None else None
        raise ConfigError(key, value, f"targets ModelZoo's LoRA can reach on Cerebras: ftlab would train {ftlab:,} "
                          f"LoRA parameters, ModelZoo's Lora callback {modelzoo:,} (it converts nn.Linear "
                          "modules only, not fused MoE experts)")


def lora_target_names(cfg: Any) -> list[str]:
    """The configured target list, or (null) the leaf names of the decoder linears of the
    architecture, read on the meta device."""
    targets = requested_targets(cfg.adapter, cfg)
    if targets is not None:
        return targets

    return leaf_names(decoder_linears(build_model(cfg.model, _tokenizer_or_none(cfg.model), device="meta")))


def pruned_weight_names(cfg: Any) -> list[str]:
    """The weights ftlab's sparsity config would prune, read off the architecture on the meta device."""
    model = build_model(cfg.model, _tokenizer_or_none(cfg.model), device="meta")
    # parameter names: a fused expert parameter is one weight here, not one entry per expert
    return sorted({v.param_name for v in select_modules(model, cfg.sparsity.modules).values()})


def _tokenizer_or_none(model_cfg: Any):
    return build_tokenizer(model_cfg) if model_cfg.tokenizer == "byte" else None


def gmp_schedule(level: float, max_steps: int, freq: int) -> dict:
    """``sparsity`` + ``update`` of a GMP block that reaches ``level`` at the last mask update.

    cerebras.pytorch 2.10 (``sparse/dynamic.py``, ``sparse/utils.py``): after the k-th optimiser step
    (k = 1..max_steps) the masks are recomputed when ``k % freq == 0 and k < stop``, at the level
    ``init + slope * k``. The last update is the last multiple of ``freq`` not after ``max_steps``;
    ``stop`` lies just past it and ``slope`` puts the level there.
    """
    last = max_steps - max_steps % freq
    if last < 1:
        raise ConfigError("hydra.launcher.sparsity_update_freq", freq,
                          f"at most train.max_steps={max_steps} (else gmp never updates the masks)")
    return {"sparsity": {"type": "linear", "init": 0.0, "slope": level / last},
            "update": {"freq": int(freq), "stop": int(last + 1)}}


def gmp_levels(block: dict, max_steps: int) -> list[float]:
    """The mask level after each optimiser step 1..max_steps under ModelZoo's GMP semantics (see
    :func:`gmp_schedule`): it changes only on update steps and is clamped to [0, 1]."""
    sched, update = block["sparsity"], block["update"]
    freq, stop = int(update["freq"]), update.get("stop")
    level, out = float(sched["init"]), []
    for k in range(1, max_steps + 1):
        if k % freq == 0 and (stop is None or k < stop):
            level = min(1.0, max(0.0, float(sched["init"]) + float(sched["slope"]) * k))
        out.append(level)
    return out


def frozen_base(cfg: Any) -> bool:
    """The base weights get no gradient (every adapter but full fine-tuning): ModelZoo's optimiser
    does not hold them."""
    return not get_adapter(cfg.adapter.name).full_weights


def base_mask(cfg: Any, opts: Any) -> dict | None:
    """What masks a frozen sparse base before ``cszoo fit`` (the ``sparsity`` block it would have had,
    plus the seed for ``init_method: random``), or None where the trainer YAML's own block applies."""
    block = sparsity_block(cfg, opts, _step_count(cfg.schedule, cfg.train.max_steps))
    if block is None or not frozen_base(cfg):
        return None
    return {**block, "seed": int(cfg.seed)}


def sparsity_block(cfg: Any, opts: Any, max_steps: int) -> dict | None:
    s = cfg.sparsity
    if s.method == "none" or not s.level:
        return None
    method = INIT_METHODS[effective_importance(s)]
    block: dict[str, Any] = {"algorithm": opts.sparsity_algorithm, "init_method": method}
    if opts.sparsity_algorithm == "static":
        block["sparsity"] = float(s.level)
    else:
        block.update(gmp_schedule(float(s.level), max_steps, int(opts.sparsity_update_freq)))
    block["param_filter"] = param_globs(cfg.model.arch, pruned_weight_names(cfg), opts.module_names)
    return block


# ---------------------------------------------------------------------------- the whole YAML
def precision_block(cfg: Any) -> dict:
    precision = str(cfg.hardware.precision)
    block: dict[str, Any] = {"enabled": precision != "float32"}
    if precision != "float32":
        block.update({"fp16_type": precision, "loss_scaling_factor": "dynamic"})
    if cfg.train.gradient_clip_val is not None:
        block["max_gradient_norm"] = float(cfg.train.gradient_clip_val)
    return block


def static_plan(opts: Any) -> JobPlan:
    """The plan of a job whose data and base checkpoint are given as launcher options."""
    return JobPlan(opts.checkpoint_path, opts.train_data_dir, opts.val_data_dir)


def cszoo_params(cfg: Any, opts: Any, num_csx: int | None = None, plan: JobPlan | None = None) -> dict:
    """The trainer YAML (as a dict) for one job; ``plan`` says where its data and base checkpoint are
    (:func:`ftlab.launchers.cerebras_steps.job_plan`; default: the launcher options)."""
    check_supported(cfg, opts, launching=False)
    plan = plan or static_plan(opts)
    t = cfg.train
    steps = _step_count(cfg.schedule, t.max_steps)
    num_csx = num_csx or (opts.num_csx if opts.num_csx is not None else cfg.hardware.num_csx)
    init: dict[str, Any] = {
        "backend": {"backend_type": str(opts.target_device),
                    "cluster_config": {"num_csx": int(num_csx), "mount_dirs": [*opts.mount_dirs, *plan.mounts],
                                       "python_paths": list(opts.python_paths)}},
        "seed": int(cfg.seed),
        "model": (model := model_block(cfg)),
        "optimizer": {"AdamW": {"betas": [float(b) for b in t.betas], "eps": float(t.eps),
                                "weight_decay": float(t.weight_decay), "correct_bias": True}},
        "schedulers": schedulers(cfg.schedule, steps),
        "precision": precision_block(cfg),
        "loop": {"max_steps": steps},
        "checkpoint": {"steps": int(t.save_every_n_steps or steps), "save_initial_checkpoint": False},
        "logging": {"log_steps": int(t.log_every_n_steps)},
    }
    if plan.val_data_dir:
        init["loop"]["eval_frequency"] = steps
    # A frozen base is masked before the run (base_mask); ModelZoo masks only weights it trains.
    sparsity = None if frozen_base(cfg) else sparsity_block(cfg, opts, steps)
    if plan.checkpoint and (_lora_on_cerebras(cfg.adapter.name) or sparsity is not None):
        # The base checkpoint has no LoRA weights and no sparsity masks: ModelZoo's strict loading
        # (and its SparsityCallback's mask check) would refuse it.
        init["checkpoint"]["disable_strict_checkpoint_loading"] = True
    if sparsity is not None:
        init["sparsity"] = sparsity
    callbacks = [cb for cb in (lora_callback(cfg, model),) if cb]
    if callbacks:
        init["callbacks"] = callbacks
    loader = {"data_processor": opts.data_processor, "num_workers": int(t.num_workers)}
    fit: dict[str, Any] = {"train_dataloader": {**loader, "data_dir": plan.train_data_dir,
                                                "batch_size": global_batch(cfg), "shuffle": True,
                                                "shuffle_seed": int(cfg.seed)}}
    if plan.val_data_dir:
        fit["val_dataloader"] = {**loader, "data_dir": plan.val_data_dir,
                                 "batch_size": int(t.eval_batch_size), "shuffle": False}
    return {"trainer": {"init": init, "fit": fit}}
