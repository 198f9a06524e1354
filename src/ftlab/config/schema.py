"""Structured config schemas.

Every YAML option in ``conf/`` is merged onto one of these dataclasses, so an unknown key or a
value of the wrong type is rejected by OmegaConf at composition time. Range checks that a type
cannot express (rank >= 1, lr > 0, ...) live in :mod:`ftlab.config.validate`.

Adapter schemas are registered by the adapter modules themselves (see
:mod:`ftlab.adapters.registry`), so adding an adapter never touches this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    # HF hub id or local directory. ``None`` = build from ``config`` with random weights.
    name_or_path: str | None = None
    # transformers model type used to build the architecture from ``config``.
    arch: str = "llama"
    # kwargs for the transformers config class (dims, heads, vocab...). Presets carry the real
    # dimensions so they can be built on the meta device without downloading anything.
    config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    tokenizer: str = "byte"  # "byte" = files-free byte-level tokenizer; "auto" = from name_or_path
    # ``None`` = every linear inside the decoder blocks (peft's all-linear, no LM head, no MoE
    # router), read from the loaded model; a list narrows it (see ftlab.adapters.targets).
    target_modules: list[str] | None = None
    init_seed: int | None = None  # seed of random init; None -> run seed
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (needs flash-attn + CUDA)
    quantization: str | None = None  # None | nf4 | int8: a frozen k-bit base through bitsandbytes (QLoRA)
    # resize a loaded model's embeddings to the tokenizer's ids (else a mismatch is refused: ftlab.models.vocab)
    resize_embeddings: bool = False


@dataclass
class AdapterConfig:
    """Common fields; each adapter family extends this with its own keys."""

    name: str = MISSING
    # ``None`` = the model's ``target_modules``.
    target_modules: list[str] | None = None


@dataclass
class CalibrationConfig:
    batches: int = 8
    batch_size: int = 8


@dataclass
class SparseGPTConfig:
    blocksize: int = 128  # columns pruned and reconstructed per lazy batch update
    percdamp: float = 0.01  # Hessian dampening: percdamp * mean(diag(H)) added to the diagonal


def _owl_defaults() -> dict[str, float]:
    # a dict, not a dataclass: the published key is ``lambda``, a Python keyword
    return {"threshold_m": 5.0, "lambda": 0.08}


@dataclass
class SparsityConfig:
    name: str = "none"
    level: float = 0.0
    levels: list[float] | None = None  # masks CLI: several levels at once
    method: str = "none"  # none | unstructured | structured | nm | random
    importance: str = "magnitude"  # magnitude | gradient | taylor | wanda | random
    # unstructured comparison group: layer | row | global; None = row for wanda (as published), else layer
    group: str | None = None
    n: int = 2
    m: int = 4
    structure: str = "channel"  # structured: channel | head
    mode: str = "sparse_to_dense"  # sparse_to_dense | sparse_to_sparse
    mask_path: str | None = None
    # fnmatch patterns over module names; default: linear layers inside decoder blocks.
    modules: list[str] = field(default_factory=lambda: ["*.layers.*"])
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    seed: int | None = None  # random masks; None -> run seed
    allocation: str = "uniform"  # per-layer levels: uniform | owl
    owl: dict[str, float] = field(default_factory=_owl_defaults)
    sparsegpt: SparseGPTConfig = field(default_factory=SparseGPTConfig)


@dataclass
class StageConfig:
    iters: int = MISSING
    lr: float = MISSING
    # Optional per-stage overrides of adapter keys (e.g. SoRA's threshold).
    sparse_lambda_2: float | None = None
    name: str | None = None


@dataclass
class ScheduleConfig:
    name: str = MISSING  # constant | cosine | linear | stages
    lr: float = 1e-3
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine / linear decay floor as a fraction of lr
    stages: list[StageConfig] | None = None


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: str = "cpu"  # cpu | gpu | auto | cerebras
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ...
    precision: str = "32-true"
    # Cerebras: number of CS-X systems; ignored elsewhere.
    num_csx: int = 1
    # Device memory available per device, used by the planner's batch-size recommendation.
    memory_gb: float | None = None


@dataclass
class TaskConfig:
    name: str = MISSING
    path: str | None = None  # local data file in the task's published format
    num_examples: int = 2000  # synthetic tasks: size of the generated source
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_length: int = 64  # prompt + answer tokens
    max_new_tokens: int = 16
    metric: str = "exact_match"
    eval_examples: int | None = None  # cap on test examples scored (None = all)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    name: str = MISSING  # csv | wandb
    project: str = "ftlab"
    mode: str = "offline"  # wandb: offline | online | disabled
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    batch_size: int = 16
    eval_batch_size: int = 64
    max_steps: int = 100  # ignored by schedule=stages (sum of stage iters)
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    log_every_n_steps: int = 10
    save_every_n_steps: int | None = None
    save_epoch_checkpoints: bool = True
    keep_checkpoints: int | None = None  # None = keep all
    # Wall-clock columns (cpu_rss_mb, tokens_per_sec) in loss_log.csv. Off => the file is a
    # pure function of seed and config (bitwise reproducible).
    log_measurements: bool = True
    deterministic: bool = True
    save_adapter: bool = True
    save_merged_model: bool = True
    num_workers: int = 0
    # Padding-free batches (ftlab.data.packing): examples packed whole into rows of ``pack_length``
    # tokens (None -> 4 x task.max_length), attention only within each example; ``batch_size``
    # then counts rows. ``group_by_length`` is the cheaper alternative: batches of similar lengths.
    packing: bool = False
    pack_length: int | None = None
    group_by_length: bool = False
    # Recompute each decoder block's activations in the backward pass (non-reentrant checkpoints):
    # activation memory ~ one block instead of all of them, for ~1/3 more compute.
    gradient_checkpointing: bool = False


@dataclass
class BaseConfig:
    """Optional first phase: continued pre-training of the base model on a corpus."""

    enabled: bool = False
    corpus: str = "task"  # "task" = the task's own synthetic corpus
    num_examples: int = 2000
    steps: int = 200
    lr: float = 3e-3
    batch_size: int = 32
    max_length: int = 64
    warmup_steps: int = 20
    seed: int | None = None  # None -> run seed


@dataclass
class PathsConfig:
    cache_dir: str = "experiments/.cache"
    # Optional node-local copy of cached base models (e.g. $TMPDIR on a SLURM node): entries of
    # cache_dir (shared filesystem) are copied here once per node and loaded from here.
    local_cache_dir: str | None = None


@dataclass
class ReuseConfig:
    enabled: bool = True


@dataclass
class EvalConfig:
    enabled: bool = True
    generate: bool = True  # exact-match generation on the test split
    # BoolQ/HellaSwag/GSM8K: final numbers from lm-evaluation-harness on the whole test split
    # (false: ftlab's fast scorer on task.eval_examples, as during training)
    harness: bool = True
    # Also score the base model before adaptation (same splits): metrics.json gets control_<metric>,
    # so one run shows what fine-tuning bought. The separate control run is adapter=none.
    control: bool = False


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 42
    # null | auto | path to a checkpoint dir
    resume: str | None = None
    model: ModelConfig = MISSING
    adapter: Any = MISSING
    sparsity: SparsityConfig = MISSING
    schedule: ScheduleConfig = MISSING
    hardware: HardwareConfig = MISSING
    task: TaskConfig = MISSING
    logger: LoggerConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    reuse: ReuseConfig = field(default_factory=ReuseConfig)
    # Free-form tags for the analysis tables.
    tags: dict[str, Any] = field(default_factory=dict)
