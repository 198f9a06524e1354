"""Structured config schemas.

Every YAML option in ``conf/`` is merged onto one of these dataclasses, so an unknown key or a
value of the wrong type is rejected by OmegaConf at composition time. Range checks that a type
cannot express per field (rank >= 1, lr > 0, a finite number, a non-empty list) are declared on
the field itself with :func:`ftlab.config.fields.knob` (its ``doc`` is the field's entry in
``docs/config.md``) and checked by :func:`ftlab.config.values.check_values`; checks that relate
several fields live in :mod:`ftlab.preflight.validate`.

Adapter schemas are registered by the adapter modules themselves (see
:mod:`ftlab.adapters.registry`), so adding an adapter never touches this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from ftlab.config.fields import Bounds, knob


@dataclass
class ModelConfig:
    name: str = knob(MISSING, "the model option's name (conf/model/NAME.yaml)")
    name_or_path: str | None = knob(None, "local HF model directory; null = build from model.config with "
                                    "random weights")
    arch: str = knob("llama", "transformers model type used to build the architecture from model.config")
    config: dict[str, Any] = knob(doc="kwargs of the transformers config class (dims, heads, vocab ...); keys are "
                                  "checked against that class. Presets carry the real dimensions, so they build on "
                                  "the meta device without downloading anything", factory=dict)
    dtype: str = knob("float32", "dtype of the frozen base weights")
    tokenizer: str = knob("byte", "byte = files-free byte-level tokenizer; auto = from model.name_or_path")
    target_modules: list[str] | None = knob(None, "null = every linear inside the decoder blocks (no LM head, no "
                                            "MoE router); a list narrows it", nonempty=True)
    init_seed: int | None = knob(None, "seed of the random init; null = the run's seed")
    attn_implementation: str = knob("sdpa", "sdpa | eager | flash_attention_2 (needs flash-attn + CUDA)")
    quantization: str | None = knob(None, "null | nf4 | int8: a frozen k-bit base through bitsandbytes (QLoRA)")
    resize_embeddings: bool = knob(False, "resize a loaded model's embeddings to the tokenizer's ids (else a "
                                   "mismatch is refused: ftlab.models.vocab)")


@dataclass
class AdapterConfig:
    """Common fields; each adapter family extends this with its own keys."""

    name: str = knob(MISSING, "the adapter option's name (conf/adapter/NAME.yaml)")
    target_modules: list[str] | None = knob(None, "null = model.target_modules", nonempty=True)


@dataclass
class CalibrationConfig:
    batches: int = knob(8, "calibration batches fed through the model", ge=1)
    batch_size: int = knob(8, "examples per calibration batch", ge=1)


@dataclass
class SparseGPTConfig:
    blocksize: int = knob(128, "columns pruned and reconstructed per lazy batch update", ge=1)
    percdamp: float = knob(0.01, "Hessian dampening: percdamp * mean(diag(H)) added to the diagonal", ge=0)


def _owl_defaults() -> dict[str, float]:
    # a dict, not a dataclass: the published key is ``lambda``, a Python keyword
    return {"threshold_m": 5.0, "lambda": 0.08}


@dataclass
class SparsityConfig:
    name: str = knob("none", "the sparsity option's name (conf/sparsity/NAME.yaml)")
    level: float = knob(0.0, "share of each target weight matrix pruned", ge=0, lt=1)
    levels: list[float] | None = knob(None, "masks CLI: several levels at once", nonempty=True,
                                      items=Bounds(0.0, 1.0, high_open=True))
    method: str = knob("none", "none, or a registered mask method (ftlab.sparsity.methods: unstructured | "
                       "structured | nm | random) or module:SPEC")
    importance: str = knob("magnitude", "a registered importance score (ftlab.sparsity.importance) or "
                            "module:SPEC")
    group: str | None = knob(None, "unstructured comparison group: layer | row | global; null = row for wanda "
                             "(as published), else layer")
    n: int = knob(2, "N of N:M semi-structured sparsity (N zeros in every M weights)")
    m: int = knob(4, "M of N:M semi-structured sparsity")
    structure: str = knob("channel", "a structured method's structure, a registered one "
                          "(ftlab.sparsity.structures: channel | head)")
    mode: str = knob("sparse_to_dense", "sparse_to_dense | sparse_to_sparse")
    mask_path: str | None = knob(None, "a mask file (.safetensors or .pt) instead of computing one")
    modules: list[str] | None = knob(None, "fnmatch patterns over module names; null = every linear layer and "
                                     "expert inside the decoder blocks, whatever the architecture names them "
                                     "(model.layers.*, transformer.h.*, ...)", nonempty=True)
    calibration: CalibrationConfig = knob(doc="calibration data of data-aware importances", factory=CalibrationConfig)
    seed: int | None = knob(None, "random masks; null = the run's seed")
    allocation: str = knob("uniform", "per-layer levels: uniform | owl")
    owl: dict[str, float] = knob(doc="OWL's outlier threshold_m and lambda", factory=_owl_defaults)
    sparsegpt: SparseGPTConfig = knob(doc="SparseGPT's reconstruction settings", factory=SparseGPTConfig)
    options: dict[str, Any] = knob(doc="settings of an importance score, mask method or structure from outside "
                                   "ftlab: its spec's config_keys name them (e.g. sparsity.options.power) and only "
                                   "those enter the mask key",
                                   factory=dict)


@dataclass
class StageConfig:
    iters: int = knob(MISSING, "optimiser steps of this stage", ge=1)
    lr: float = knob(MISSING, "learning rate of this stage", gt=0)
    sparse_lambda_2: float | None = knob(None, "this stage's SoRA/SDoRA threshold (overrides the adapter's)", ge=0)
    name: str | None = knob(None, "label of the stage in stage_metrics.csv")


@dataclass
class ScheduleConfig:
    name: str = knob(MISSING, "constant | cosine | linear | stages")
    lr: float = knob(1e-3, "peak learning rate (AdamW)", gt=0)
    warmup_steps: int = knob(0, "linear warm-up steps from 0 to lr", ge=0)
    min_lr_ratio: float = knob(0.0, "cosine / linear decay floor as a fraction of lr", ge=0, le=1)
    stages: list[StageConfig] | None = knob(None, "schedule=stages: [{iters, lr}, ...], run in order",
                                            nonempty=True)


@dataclass
class HardwareConfig:
    name: str = knob(MISSING, "the hardware option's name (conf/hardware/NAME.yaml)")
    accelerator: str = knob("cpu", "a registered hardware target (ftlab.hardware: cpu | gpu | auto | cerebras)")
    devices: int = knob(1, "devices per node", ge=1)
    num_nodes: int = knob(1, "nodes", ge=1)
    strategy: str = knob("auto", "Lightning strategy: auto | ddp | ...")
    precision: str = knob("32-true", "Lightning precision: 32-true | bf16-mixed | 16-mixed | ...")
    num_csx: int = knob(1, "Cerebras: number of CS-X systems; ignored elsewhere", ge=1)
    memory_gb: float | None = knob(None, "device memory per device (GB), for the planner's batch-size "
                                   "recommendation", gt=0)


@dataclass
class TaskConfig:
    name: str = knob(MISSING, "the task option's name (conf/task/NAME.yaml)")
    path: str | None = knob(None, "local data file in the task's published format")
    num_examples: int = knob(2000, "synthetic tasks: size of the generated source", ge=1)
    val_fraction: float = knob(0.1, "share of the source held out for validation", gt=0, lt=1)
    test_fraction: float = knob(0.1, "share of the source held out for the test split", gt=0, lt=1)
    max_length: int = knob(64, "prompt + answer tokens per example", ge=1)
    max_new_tokens: int = knob(16, "tokens generated per answer when scoring", ge=1)
    metric: str = knob("exact_match", "exact_match | accuracy | ... (ftlab.evaluation.metrics.SCORERS)")
    eval_examples: int | None = knob(None, "cap on test examples scored (null = all)", ge=1)
    options: dict[str, Any] = knob(doc="the task's own options (checked by the task)", factory=dict)
    format: str | None = knob(None, "task=instruct: the row layout, prompt_answer | alpaca | messages | sharegpt")
    # untyped because Hydra cannot assign a dict to a null typed dict
    columns: Any = knob(None, "task=instruct: {format field: file column}, given whole (task.columns={a: b})")
    prompt_template: str | None = knob(None, "task=instruct: a prompt format string (prompt_answer, alpaca)")
    chat_template: str | None = knob(None, "task=instruct: a Jinja chat template file (messages, sharegpt); "
                                     "null = the tokenizer's own")
    last_turn_only: bool = knob(False, "task=instruct: loss on the last assistant turn only")
    sources: Any = knob(None, "a weighted mixture instead of task.path: [{path, format, columns, weight, name}, "
                        "...] (ftlab.data.mixture)")
    mixture_replacement: bool = knob(False, "task.sources: draw each source's round(weight x n) train examples "
                                     "with replacement (default: whole copies + a sample without)")
    mixture_shared_split: bool = knob(False, "task.sources: split the pooled sources once into train/val/test "
                                      "(default: each source split on its own)")


@dataclass
class LoggerConfig:
    name: str = knob(MISSING, "csv | wandb | tensorboard | mlflow")
    project: str = knob("ftlab", "wandb project")
    mode: str = knob("offline", "wandb: offline | online | disabled")
    entity: str | None = knob(None, "wandb entity (team or user)")
    tags: list[str] = knob(doc="wandb tags", factory=list)
    tracking_uri: str | None = knob(None, "mlflow: tracking URI (http://host:5000, file:/dir, sqlite:///f.db); "
                                    "null: a local file store <run_dir>/mlruns")
    experiment: str | None = knob(None, "mlflow experiment name; null: the run's name")
    run_name: str | None = knob(None, "mlflow run name; null: the run dir's name (timestamp or sweep job)")


@dataclass
class TrainConfig:
    batch_size: int = knob(16, "examples per optimiser micro-batch (rows when train.packing=true)", ge=1)
    eval_batch_size: int = knob(64, "examples per evaluation batch", ge=1)
    max_steps: int | None = knob(100, "optimiser steps; ignored by schedule=stages (sum of stage iters); null "
                                 "with train.max_epochs", ge=1)
    max_epochs: int | None = knob(None, "passes over the train split instead of train.max_steps (exactly one of "
                                  "them is set; ftlab.data.epochs)", ge=1)
    accumulate_grad_batches: int = knob(1, "micro-batches per optimiser step", ge=1)
    gradient_clip_val: float | None = knob(1.0, "gradient norm clip; null = no clipping", gt=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", ge=0)
    betas: list[float] = knob(doc="AdamW (beta1, beta2), each in [0, 1)", factory=lambda: [0.9, 0.999], length=2,
                              items=Bounds(0.0, 1.0, high_open=True))
    eps: float = knob(1e-8, "AdamW epsilon", gt=0)
    log_every_n_steps: int = knob(10, "steps per loss_log.csv row", ge=1)
    save_every_n_steps: int | None = knob(None, "steps between step checkpoints; null = epoch ends only", ge=1)
    save_epoch_checkpoints: bool = knob(True, "a checkpoint at each epoch end")
    keep_checkpoints: int | None = knob(None, "newest checkpoints kept; null = keep all", ge=1)
    log_measurements: bool = knob(True, "wall-clock columns (cpu_rss_mb, tokens_per_sec) in loss_log.csv; false: "
                                  "the file is a pure function of seed and config")
    deterministic: bool = knob(True, "torch deterministic algorithms")
    save_adapter: bool = knob(True, "write adapter/ (peft format)")
    save_merged_model: bool = knob(True, "write model/ (merged, HF format)")
    early_stopping: EarlyStoppingConfig = knob(doc="stop on a logged metric (Lightning's EarlyStopping)",
                                               factory=lambda: EarlyStoppingConfig())
    num_workers: int = knob(0, "DataLoader worker processes", ge=0)
    packing: bool = knob(False, "padding-free batches: examples packed whole into rows of train.pack_length "
                         "tokens, attention only within each example")
    pack_length: int | None = knob(None, "tokens per packed row; null = 4 x task.max_length", ge=1)
    group_by_length: bool = knob(False, "batches of similar lengths (the cheaper alternative to packing)")
    gradient_checkpointing: bool = knob(False, "recompute each decoder block's activations in the backward pass: "
                                        "activation memory ~ one block, for ~1/3 more compute")


@dataclass
class BaseConfig:
    """Optional first phase: continued pre-training of the base model on a corpus."""

    enabled: bool = knob(False, "pre-train the base model first (cached)")
    corpus: str = knob("task", "task = the task's own synthetic corpus")
    num_examples: int = knob(2000, "corpus examples", ge=1)
    steps: int = knob(200, "pre-training steps", ge=1)
    lr: float = knob(3e-3, "pre-training learning rate", gt=0)
    batch_size: int = knob(32, "pre-training batch size", ge=1)
    max_length: int = knob(64, "tokens per corpus example", ge=1)
    warmup_steps: int = knob(20, "pre-training warm-up steps", ge=0)
    seed: int | None = knob(None, "null = the run's seed")


@dataclass
class PathsConfig:
    cache_dir: str = knob("experiments/.cache", "the reuse cache (shared between runs)")
    local_cache_dir: str | None = knob(None, "node-local copy of cached base models (e.g. $TMPDIR on a SLURM "
                                       "node), copied once per node from paths.cache_dir")


@dataclass
class ReuseConfig:
    enabled: bool = knob(True, "look up and publish cached steps (base, mask, stages)")


@dataclass
class EvalConfig:
    enabled: bool = knob(True, "evaluate after training (val_loss and the task metric)")
    generate: bool = knob(True, "exact-match generation on the test split")
    harness: bool = knob(True, "BoolQ/HellaSwag/GSM8K: final numbers from lm-evaluation-harness on the whole "
                         "test split (false: ftlab's fast scorer on task.eval_examples)")
    control: bool = knob(False, "also score the base model before adaptation: metrics.json gets "
                         "control_<metric>")
    benchmarks: list[str] = knob(doc="lm-eval's installed tasks by name, scored after training on local files "
                                 "(README 'Benchmarks')", factory=list)
    suite: str | None = knob(None, "a key of eval.suites: its tasks are scored and averaged (unweighted)")
    suites: dict[str, list[str]] = knob(doc="named lists of lm-eval tasks (conf/eval)", factory=dict)
    data: dict[str, Any] = knob(doc="eval.data.<task>=PATH (file, release dir, datasets disk dir) or {split: PATH}",
                                factory=dict)
    num_fewshot: int | None = knob(None, "few-shot examples; null = each task's lm-eval default", ge=0)
    max_gen_toks: int | None = knob(None, "generation budget; null = each task's lm-eval default", ge=1)
    limit: int | None = knob(None, "score only the first N examples of each task (lm-eval's --limit)", ge=1)
    cache: bool = knob(True, "lm-eval scores as a cached step (weights digest + task + data + shots + limit + "
                       "lm-eval version)")
    every_n_steps: int | None = knob(None, "during training: validation loss (and eval.during_training's "
                                     "benchmarks) every N training batches; null = after training only", ge=1)
    during_training: DuringTrainingConfig = knob(doc="benchmark subset scored at each eval.every_n_steps",
                                                 factory=lambda: DuringTrainingConfig())


@dataclass
class DuringTrainingConfig:
    benchmarks: list[str] = knob(doc="lm-eval tasks (files from eval.data) scored each time", factory=list)
    limit: int | None = knob(50, "examples per task each time; null = all", ge=1)


@dataclass
class EarlyStoppingConfig:
    metric: str | None = knob(None, "null: off; val_loss or eval/<task> of eval.during_training.benchmarks")
    mode: str = knob("min", "min | max")
    patience: int = knob(3, "evaluations without an improvement larger than min_delta before stopping", ge=0)
    min_delta: float = knob(0.0, "smallest change that counts as an improvement", ge=0)


@dataclass
class ExportConfig:
    checkpoint: str = knob("last", "last | best (the best evaluated step of the early-stopping metric, else "
                           "val_loss)")


@dataclass
class RunConfig:
    name: str = knob("run", "the run's name (output dir experiments/<name>/<timestamp>)")
    seed: int = knob(42, "seed of data order, init and dropout")
    resume: str | None = knob(None, "null | auto (newest checkpoint of hydra.run.dir) | a checkpoint dir")
    model: ModelConfig = knob(MISSING, "the base model (conf/model)")
    adapter: Any = knob(MISSING, "the adapter family and its keys (one table per adapter below)")
    sparsity: SparsityConfig = knob(MISSING, "pruning of the base (conf/sparsity)")
    schedule: ScheduleConfig = knob(MISSING, "learning-rate schedule (conf/schedule)")
    hardware: HardwareConfig = knob(MISSING, "devices, nodes, precision (conf/hardware)")
    task: TaskConfig = knob(MISSING, "data and metric (conf/task)")
    logger: LoggerConfig = knob(MISSING, "csv, wandb, tensorboard or mlflow (conf/logger)")
    train: TrainConfig = knob(doc="optimisation, checkpoints, data loading", factory=TrainConfig)
    base: BaseConfig = knob(doc="optional base pre-training phase", factory=BaseConfig)
    eval: EvalConfig = knob(doc="evaluation after training", factory=EvalConfig)
    export: ExportConfig = knob(doc="what adapter/ and model/ hold", factory=ExportConfig)
    paths: PathsConfig = knob(doc="cache locations", factory=PathsConfig)
    reuse: ReuseConfig = knob(doc="the reuse cache on/off", factory=ReuseConfig)
    tags: dict[str, Any] = knob(doc="free-form tags for the analysis tables", factory=dict)
