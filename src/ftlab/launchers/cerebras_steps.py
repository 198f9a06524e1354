"""The steps a CS-X job needs before ``cszoo fit``: the task's data in ModelZoo's HDF5 fine-tuning
format, and the base model as a Cerebras checkpoint.

Both are plain ``cszoo`` commands (ModelZoo ``Release_2.10.0``; formats read off its source, see
:mod:`ftlab.launchers.cerebras_names`), emitted per job next to ``cszoo_params.yaml`` and run in
order by the job's command script:

1. ``cszoo data_preprocess run --config cszoo_data_<split>.yaml`` for the train and val splits, in
   ModelZoo's ``finetuning`` mode: ftlab's examples are written as JSONL ``{prompt, completion}``
   and read with ModelZoo's ``prompt_completion_text_read_hook``, whose default loss weights are 0
   on the prompt and 1 on the completion (answer-only loss, as ftlab's ``encode_example``); the
   tokenizer is the model's (``huggingface_tokenizer: model.name_or_path``; for ftlab's byte
   tokenizer a fast tokenizer with the same ids written into the job dir, :func:`byte_tokenizer_files`,
   because ModelZoo's fine-tuning mode asks for offset mappings, which ByT5Tokenizer cannot give),
   ``max_seq_length`` is ``task.max_length`` and a too-long prompt loses its start (``keep_end``, as
   ftlab). Skipped when ``hydra.launcher.train_data_dir`` names data preprocessed already.
2. ``cszoo checkpoint convert --model <arch> --src-fmt hf --tgt-fmt cs-2.9 ...`` from the HF base in
   ``model.name_or_path`` into one directory shared by the sweep, unless
   ``hydra.launcher.checkpoint_path`` names a Cerebras checkpoint already.
3. Only for a sparse base that stays frozen (LoRA, masked LoRA): the base checkpoint masked once by
   cerebras.pytorch's own mask functions (:mod:`ftlab.launchers.cerebras_mask_base`, run by the
   python of the ModelZoo environment) into ``<job dir>/cszoo_masked_base``; ``cszoo fit`` starts
   from it and has no ``sparsity`` block (ModelZoo 2.10 cannot keep masks on frozen weights, see
   that module).

A step is done when its marker file exists, written by the script after the command succeeded and
its output is there (ModelZoo 2.10's preprocessing exits 0 even when its workers wrote nothing); a
done step is skipped, so the jobs of a sweep convert the base once, and a re-run script resumes.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ftlab.core.errors import ConfigError
from ftlab.data.tasks import build_task
from ftlab.launchers.cerebras_names import (
    CS_CHECKPOINT_FORMAT,
    MODELZOO_MODELS,
    converted_checkpoint_name,
    hf_checkpoint_file,
)

DONE = ".ftlab_done"
DATA_DIR = "cszoo_data"
READ_HOOK = "cerebras.modelzoo.data_preparation.data_preprocessing.hooks:prompt_completion_text_read_hook"
SPLITS = ("train", "val")
#: The base-masking script (run in the ModelZoo environment; copied into the job dir) and its output.
MASK_SCRIPT = Path(__file__).with_name("cerebras_mask_base.py")
MASK_DIR = "cszoo_masked_base"
MASKED_FILE = "masked_base.mdl"
#: ByT5's ids (ftlab's byte tokenizer): three specials, then byte b is b + 3.
BYTE_SPECIALS = ("<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class Step:
    """One ``cszoo`` command of a job, skipped when ``output/.ftlab_done`` exists."""

    name: str
    args: list[str]  # after the executable
    output: Path
    expect: str  # glob under output that must match after the command (else the step failed)
    #: run ``args`` with the python beside the executable (the ModelZoo environment's), not the executable
    python: bool = False

    @property
    def done(self) -> Path:
        return self.output / DONE


@dataclass
class JobPlan:
    """What a job needs besides the trainer YAML: files to write, steps to run, where their outputs are."""

    checkpoint: str
    train_data_dir: str | None
    val_data_dir: str | None
    steps: list[Step] = field(default_factory=list)
    files: dict[Path, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)  # dirs the appliance must see besides the options'


# ---------------------------------------------------------------------------- base checkpoint
def check_base(cfg: Any, opts: Any, *, launching: bool) -> None:
    """Fine-tuning needs base weights: a Cerebras checkpoint, or an HF model dir to convert."""
    if opts.checkpoint_path:
        return
    path = cfg.model.name_or_path
    if not path:
        raise ConfigError("hydra.launcher.checkpoint_path", None,
                          "a Cerebras checkpoint of the base model, or set model.name_or_path to a local HF model "
                          "dir to convert one from (without either, cszoo fit would start from random weights)")
    if launching and not opts.dry_run:
        if not Path(path).is_dir():
            raise ConfigError("model.name_or_path", path,
                              "a local HF model dir to convert with cszoo checkpoint convert "
                              "(or set hydra.launcher.checkpoint_path)")
        hf_checkpoint_file(path)


def base_dir(cfg: Any, opts: Any, sweep_dir: Path) -> Path:
    """Where the converted base goes: shared by the jobs of a sweep, one dir per model preset."""
    root = Path(opts.base_checkpoint_dir) if opts.base_checkpoint_dir else sweep_dir / "cszoo_base"
    return root / str(cfg.model.name)


def conversion(cfg: Any, opts: Any, sweep_dir: Path) -> tuple[str, Step]:
    """``(checkpoint the conversion writes, the conversion step)`` from ``model.name_or_path``."""
    hf = Path(str(cfg.model.name_or_path))
    # A dry run may describe an HF dir that is not on this machine: assume the usual sharded index.
    hf_file = hf_checkpoint_file(hf) if hf.is_dir() else "model.safetensors.index.json"
    out = base_dir(cfg, opts, sweep_dir)
    args = ["checkpoint", "convert", "--model", MODELZOO_MODELS[cfg.model.arch], "--src-fmt", "hf",
            "--tgt-fmt", CS_CHECKPOINT_FORMAT, "--config", str(hf / "config.json"), "--output-dir", str(out),
            "--no-progress-bar", str(hf / hf_file)]
    name = converted_checkpoint_name(hf_file)
    return str(out / name), Step("checkpoint", args, out, name)


# ---------------------------------------------------------------------------- data
def byte_tokenizer_files() -> dict[str, str]:
    """A fast (Rust) tokenizer with the ids of ftlab's byte tokenizer (ByT5, ``extra_ids=0``), as the
    files ``AutoTokenizer.from_pretrained(dir)`` reads: UTF-8 bytes via the byte-level alphabet, a
    BPE without merges (one token per byte), ByT5's three specials first."""
    vocab = {tok: i for i, tok in enumerate(BYTE_SPECIALS)}
    vocab.update({char: b + len(BYTE_SPECIALS) for b, char in bytes_to_unicode().items()})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(BYTE_SPECIALS))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
              "unk_token": "<unk>", "model_max_length": 1 << 30}
    return {"tokenizer.json": tok.to_str(), "tokenizer_config.json": json.dumps(config)}


def tokenizer_params(model_cfg: Any, byte_dir: Path | None = None) -> dict:
    if model_cfg.tokenizer == "byte":
        return {"huggingface_tokenizer": str(byte_dir)}
    if not model_cfg.name_or_path:
        raise ConfigError("model.tokenizer", model_cfg.tokenizer, "byte, or auto with model.name_or_path set")
    return {"huggingface_tokenizer": str(model_cfg.name_or_path)}


def preprocess_config(cfg: Any, source: Path, output: Path, byte_dir: Path | None = None) -> dict:
    """A ``cszoo data_preprocess run --config`` config (ModelZoo fine-tuning mode) for one split."""
    max_len = int(cfg.task.max_length)
    if max_len > int(cfg.model.config.max_position_embeddings):
        raise ConfigError("task.max_length", max_len,
                          f"at most model.config.max_position_embeddings={cfg.model.config.max_position_embeddings}")
    return {
        "setup": {"data": {"source": str(source), "type": "local"}, "output_dir": str(output),
                  "processes": 1, "mode": "finetuning"},
        "processing": {
            **tokenizer_params(cfg.model, byte_dir),
            "max_seq_length": max_len,
            "min_sequence_len": 2,  # ModelZoo's default (10) would drop short examples ftlab trains on
            "read_hook": READ_HOOK,
            "read_hook_kwargs": {"prompt_key": "prompt", "completion_key": "completion"},
            "write_in_batch": True,
            "resume_from_checkpoint": False,
            "shuffle": False,  # the trainer's dataloader shuffles (seeded)
            "use_ftfy": False,  # train on the task's text exactly as ftlab does
        },
        # sep_token null: ModelZoo's default puts "<|sep|>" between prompt and completion; ftlab has none.
        "dataset": {"sep_token": None,
                    "truncate_to_msl": {"prompt_truncation_mode": "keep_end", "max_turn_length": max_len}},
    }


def examples_jsonl(examples: list) -> str:
    return "".join(json.dumps({"prompt": e.prompt, "completion": e.answer}) + "\n" for e in examples)


def global_batch(cfg: Any) -> int:
    """Samples per optimiser step over all devices: ModelZoo's ``batch_size`` (split over systems)."""
    h, t = cfg.hardware, cfg.train
    return int(t.batch_size * t.accumulate_grad_batches * h.devices * h.num_nodes)


def _check_batches(cfg: Any, splits: Any) -> None:
    """ModelZoo's HDF5 loader drops an incomplete last batch (``drop_last``): a split smaller than its
    batch gives no batch at all, and ``cszoo fit`` fails ("Dataloader does not generate any
    batches"), for validation only after the whole training. Refused before launch instead."""
    for split, key, batch in (("train", "train.batch_size", global_batch(cfg)),
                              ("val", "train.eval_batch_size", int(cfg.train.eval_batch_size))):
        n = len(getattr(splits, split))
        if n < batch:
            value = cfg.train.batch_size if split == "train" else batch
            raise ConfigError(key, value, f"a batch of at most {n} samples on Cerebras (the task's {split} split; "
                              "ModelZoo drops an incomplete batch, so a larger one gives none)")


def data_plan(cfg: Any, job_dir: Path) -> tuple[dict[str, str], list[Step], dict[Path, str]]:
    """``({split: HDF5 dir}, preprocessing steps, files to write)`` from the run's task."""
    splits = build_task(cfg.task).splits(int(cfg.seed))
    _check_batches(cfg, splits)
    dirs, steps, files = {}, [], {}
    byte_dir = job_dir / DATA_DIR / "byte_tokenizer" if cfg.model.tokenizer == "byte" else None
    if byte_dir is not None:
        files.update({byte_dir / name: text for name, text in byte_tokenizer_files().items()})
    for split in SPLITS:
        raw = job_dir / DATA_DIR / f"{split}_examples"
        out = job_dir / DATA_DIR / split
        config = job_dir / f"cszoo_data_{split}.yaml"
        files[raw / "examples.jsonl"] = examples_jsonl(getattr(splits, split))
        files[config] = yaml.safe_dump(preprocess_config(cfg, raw, out, byte_dir), sort_keys=False)
        steps.append(Step(f"data_{split}", ["data_preprocess", "run", "--config", str(config)], out, "*.h5"))
        dirs[split] = str(out)
    return dirs, steps, files


def mask_step(mask: dict, checkpoint: str, job_dir: Path) -> tuple[str, Step, dict[Path, str]]:
    """``(masked checkpoint, the masking step, its files)``: ``mask`` is the ``sparsity`` block the
    trainer YAML would have had (level, ``init_method``, ``param_filter``) plus the seed."""
    spec, script, out = job_dir / "cszoo_mask.yaml", job_dir / MASK_SCRIPT.name, job_dir / MASK_DIR
    files = {spec: yaml.safe_dump(mask, sort_keys=False), script: MASK_SCRIPT.read_text()}
    step = Step("mask_base", [str(script), str(spec), checkpoint, str(out)], out, MASKED_FILE, python=True)
    return str(out / MASKED_FILE), step, files


def job_plan(cfg: Any, opts: Any, job_dir: Path, sweep_dir: Path, mask: dict | None = None) -> JobPlan:
    """Data first (cheap), then the base checkpoint (masked when ``mask`` is given, see
    :func:`mask_step`), as the command script runs them."""
    steps: list[Step] = []
    files: dict[Path, str] = {}
    train, val = opts.train_data_dir, opts.val_data_dir
    mounts = []
    if not train:
        dirs, steps, files = data_plan(cfg, job_dir)
        train, val = dirs["train"], dirs["val"]
        mounts.append(str(job_dir / DATA_DIR))
    if opts.checkpoint_path:
        checkpoint = str(opts.checkpoint_path)
    else:
        checkpoint, step = conversion(cfg, opts, sweep_dir)
        steps.append(step)
    if mask is not None:
        checkpoint, step, mask_files = mask_step(mask, checkpoint, job_dir)
        steps.append(step)
        files.update(mask_files)
        mounts.append(str(step.output))
    return JobPlan(checkpoint, train, val, steps, files, mounts)


def step_lines(executable: str, step: Step) -> list[str]:
    """Bash for one step: skip it when done, else start clean, run, check its output, mark done."""
    out, done = shlex.quote(str(step.output)), shlex.quote(str(step.done))
    expect = str(step.output / step.expect)  # compgen -G expands the (quoted) glob itself
    program = shlex.quote(executable)
    if step.python:  # the interpreter of the environment the executable belongs to
        program = f'"$(dirname "$(command -v {program})")/python"'
    cmd = " ".join([program, *map(shlex.quote, step.args)])
    # One command a line: under ``set -e`` a failure inside an ``a && b`` list would not stop the script.
    return [f"# {step.name}",
            f"if [ -e {done} ]; then",
            f"  echo 'ftlab: {step.name} done already, skipped'",
            "else",
            f"  rm -rf {out}",
            f"  {cmd}",
            f"  compgen -G {shlex.quote(expect)} > /dev/null || "
            f"{{ echo 'ftlab: {step.name} wrote no {step.expect} in {step.output}' >&2; exit 1; }}",
            f"  touch {done}",
            "fi"]
