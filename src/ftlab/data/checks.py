"""Preflight checks of a run's data, before Hydra creates a run dir.

A run whose train split is smaller than one batch trains for zero steps and still exports a model
and metrics that look like a result; examples cut to ``task.max_length`` before their answer
train toward nothing. Both are decided by the examples, the tokenizer and the batch settings
alone, so :func:`check_data` loads the task's examples (generated or read from ``task.path``),
splits and encodes them exactly as the run will, and fails with one line naming the key.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from transformers import ByT5Tokenizer

from ftlab.core.errors import ConfigError
from ftlab.data.chat import render_examples
from ftlab.data.encoding import IGNORE_INDEX, encode_spans
from ftlab.data.tasks import build_task, split_examples
from ftlab.models import build_tokenizer

log = logging.getLogger("ftlab")

#: ``split_examples`` gives each of train/val/test at least one example.
MIN_EXAMPLES = 3


@dataclass(frozen=True)
class SplitCut:
    """What ``task.max_length`` does to one held-out split, counted by the rule of the train split."""

    examples: int
    truncated: int  # examples longer than task.max_length
    cut_tokens: int  # tokens beyond it
    no_target: int  # examples left without any target token

    def report(self, split: str) -> dict[str, int]:
        return {f"data_{split}_examples": self.examples, f"data_{split}_truncated_examples": self.truncated,
                f"data_{split}_truncated_tokens": self.cut_tokens, f"data_{split}_no_target_examples": self.no_target}


@dataclass(frozen=True)
class DataFacts:
    train: int  # train split size
    truncated: int  # train examples cut to task.max_length at all
    answer_cut: int  # ... of them cut inside the answer (or its EOS)
    longest: int  # tokens of the longest prompt+answer+EOS
    lengths: tuple[int, ...] = ()  # tokens of each encoded train example (packing and epochs count them)
    cut_tokens: int = 0  # tokens task.max_length removed from the train examples
    # the held-out splits: val_loss reads val cut exactly so; the test split's counts say how many
    # test examples are longer than task.max_length (a generation scorer reads a test prompt whole,
    # a choice scorer cuts the prompt's head)
    val: SplitCut | None = None
    test: SplitCut | None = None

    def report(self) -> dict[str, int]:
        """What ``metrics.json`` records: per split, examples and tokens the length cut, and
        examples left without any target token (an answer cut away; a conversation without an
        assistant token). Train's keys carry no split name (``data_truncated_examples``)."""
        out = {"data_train_examples": self.train, "data_truncated_examples": self.truncated,
               "data_truncated_tokens": self.cut_tokens, "data_no_target_examples": self.answer_cut}
        for name, cut in (("val", self.val), ("test", self.test)):
            if cut is not None:
                out.update(cut.report(name))
        return out


def world_size(cfg: Any) -> int:
    return int(cfg.hardware.devices) * int(cfg.hardware.num_nodes)


def source_key(cfg: Any) -> str:
    return "task.path" if cfg.task.path else "task.num_examples"


def check_train_batches(cfg: Any, n_train: int) -> None:
    """At least one optimiser step per epoch: every rank gets a full batch (the sampler drops the
    last partial one). Also called by the run itself, after the data module's setup."""
    world = world_size(cfg)
    per_rank = n_train // world
    bs = int(cfg.train.batch_size)
    if per_rank < bs:
        source = f"task.path={cfg.task.path}" if cfg.task.path else f"task.num_examples={cfg.task.num_examples}"
        ranks = f" over {world} processes ({per_rank} each)" if world > 1 else ""
        raise ConfigError("train.batch_size", bs,
                          f"at most {per_rank}: the train split of task {cfg.task.name} has {n_train} examples"
                          f"{ranks} ({source}), and a run needs at least one optimiser step; lower "
                          "train.batch_size or give the task more examples")


def check_base_batches(cfg: Any) -> None:
    """Continued pre-training draws ``base.num_examples`` corpus lines; at least one full batch."""
    base = cfg.base
    if not base.enabled:
        return
    per_rank = int(base.num_examples) // world_size(cfg)
    if per_rank < base.batch_size:
        raise ConfigError("base.batch_size", base.batch_size,
                          f"at most {per_rank} (base.num_examples={base.num_examples} corpus lines per "
                          f"{world_size(cfg)} process(es)): base pre-training needs at least one optimiser step")


def _source_size(cfg: Any, n: int) -> None:
    if n < MIN_EXAMPLES:
        what = cfg.task.path if cfg.task.path else cfg.task.num_examples
        raise ConfigError(source_key(cfg), what,
                          f"a source of at least {MIN_EXAMPLES} examples (one each for train/val/test); it has {n}")


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens of a text as :func:`encode_example` counts them. The byte tokenizer maps each UTF-8
    byte to one token, so its count is the byte length: the preflight measures thousands of
    examples and its python ``encode`` costs ~0.1 ms each. (A text that spells a special token,
    ``</s>``, counts its bytes: an upper bound, so truncation is never under-reported.)"""
    if isinstance(tokenizer, ByT5Tokenizer):
        return lambda text: len(text.encode("utf-8"))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def truncation(tokenizer, examples: list, max_length: int) -> tuple[int, int, int, list[int], int]:
    """``(truncated, answer_cut, longest)`` of ``examples`` under :func:`encode_example`'s rule:
    the answer plus EOS is kept whole when it fits in ``max_length - 1`` tokens (one prompt token
    stays), else it is cut. Also each example's encoded length (at most ``max_length``) and the
    tokens cut in all."""
    count = token_counter(tokenizer)
    truncated = answer_cut = longest = cut_tokens = 0
    lengths = []
    for ex in examples:
        if ex.spans is not None:  # a rendered conversation: cut at the end; "answer cut" = no target left
            enc = encode_spans(tokenizer, ex.text, ex.spans, len(ex.text) * 4 + 16)
            n = len(enc.input_ids)
            answer_cut += all(t == IGNORE_INDEX for t in enc.labels[:max_length])
        else:
            p = count(ex.prompt)
            a = count(ex.answer) + 1  # + EOS
            n = p + a
            answer_cut += a >= max_length
        longest = max(longest, n)
        truncated += n > max_length
        lengths.append(min(n, max_length))
        cut_tokens += max(0, n - max_length)
    return truncated, answer_cut, longest, lengths, cut_tokens


@functools.lru_cache(maxsize=32)
def _facts(task_yaml: str, model_yaml: str, seed: int) -> DataFacts:
    task_cfg, model_cfg = OmegaConf.create(task_yaml), OmegaConf.create(model_yaml)
    examples = build_task(task_cfg).examples(seed)
    _source_size(OmegaConf.create({"task": task_cfg}), len(examples))
    task = build_task(task_cfg)
    splits = (task.splits(seed) if task_cfg.get("sources") is not None  # a mixture: weighted per source
              else split_examples(examples, task_cfg.val_fraction, task_cfg.test_fraction, seed))
    tokenizer = build_tokenizer(model_cfg)
    max_length = int(task_cfg.max_length)
    train = render_examples(splits.train, tokenizer, task_cfg, f"{task_cfg.path} (train split)")
    truncated, cut, longest, lengths, cut_tokens = truncation(tokenizer, train, max_length)
    held_out = {}
    for name in ("val", "test"):
        part = render_examples(getattr(splits, name), tokenizer, task_cfg, f"{task_cfg.path} ({name} split)")
        n_cut, no_target, _, _, n_tokens = truncation(tokenizer, part, max_length)
        held_out[name] = SplitCut(len(part), n_cut, n_tokens, no_target)
    val = held_out["val"]
    if (truncated or val.truncated) and cut < len(train):  # all train cut: check_data fails instead
        log.warning("task.max_length=%d truncates %d of %d train examples of task %s (%d inside the answer; "
                    "the longest needs %d tokens) and %d of %d val examples (%d left with no target token)",
                    max_length, truncated, len(train), task_cfg.name, cut, longest, val.truncated,
                    val.examples, val.no_target)
    return DataFacts(len(train), truncated, cut, longest, tuple(lengths), cut_tokens, **held_out)


def data_facts(cfg: Any) -> DataFacts:
    """Load, split and measure the task's data as the run will (cached per task/model/seed: a sweep
    over other keys reads a data file once and warns once)."""
    task_yaml = OmegaConf.to_yaml(cfg.task, resolve=True)
    model_yaml = OmegaConf.to_yaml(cfg.model, resolve=True)
    return _facts(task_yaml, model_yaml, int(cfg.seed))


def check_data(cfg: Any, *, trains: bool = True) -> DataFacts:
    """Raise :class:`ConfigError` / :class:`FtlabError` (one line) for data the run cannot use;
    a warning line says how many train examples are truncated. ``trains=False`` (an eval-only
    control adapter) skips the batch checks: such a run takes no optimiser step by design."""
    facts = data_facts(cfg)
    if facts.answer_cut == facts.train:
        cut = ("cut before their first assistant token" if cfg.task.get("format") in ("messages", "sharegpt")
               else "truncated inside their answer")
        raise ConfigError("task.max_length", int(cfg.task.max_length),
                          f"a larger length: all {facts.train} train examples of task {cfg.task.name} are "
                          f"{cut}, so the run would learn nothing (the longest prompt+"
                          f"answer needs {facts.longest} tokens)")
    if trains:
        check_train_batches(cfg, facts.train)
        check_base_batches(cfg)
    return facts
