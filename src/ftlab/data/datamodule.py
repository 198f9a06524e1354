"""The LightningDataModule: seeded splits, a resumable shuffled sampler, padded or packed batches."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from ftlab.data.chat import render_splits
from ftlab.data.encoding import Encoded, collate, encode, encode_text
from ftlab.data.packing import collate_packed, pack_length, pack_rows
from ftlab.data.tasks import Splits, build_task
from ftlab.data.tokenized import TokenizedSplit, tokenized_data


class ResumableSampler(Sampler[int]):
    """A seeded permutation per epoch that can start part-way through an epoch.

    The order depends only on (seed, epoch), and ``skip`` drops the batches a resumed run already
    consumed, so an interrupted-and-resumed run sees exactly the data of an uninterrupted one.
    Under DDP each rank takes every ``world``-th index of the same permutation.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1,
                 epoch_fn: Callable[[], int] | None = None):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch = 0
        # Under Lightning the epoch comes from ``trainer.current_epoch`` at iteration time: the
        # number Lightning passes to ``set_epoch`` runs one ahead after a resume from an
        # epoch-end checkpoint (it re-enters the finished epoch), which would reshuffle the data.
        self.epoch_fn = epoch_fn
        self._skip: dict[int, int] = {}  # epoch -> samples (per rank) to skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, epoch: int, samples: int) -> None:
        self._skip = {epoch: samples}

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        usable = len(order) - len(order) % self.world
        return order[self.rank:usable:self.world]

    def __iter__(self) -> Iterator[int]:
        if self.epoch_fn is not None:
            self.epoch = self.epoch_fn()
        order = self._order()
        start = self._skip.pop(self.epoch, 0)
        self._served = start
        for idx in order[start:]:
            self._served += 1
            yield idx

    def remaining(self) -> int:
        """Samples of this epoch not yet handed out (0 once the epoch's data is exhausted)."""
        return len(self) - getattr(self, "_served", 0)

    def __len__(self) -> int:
        return (self.n - self.n % self.world) // self.world


class LengthGroupedSampler(ResumableSampler):
    """A :class:`ResumableSampler` whose batches hold examples of similar length (less padding).

    Per epoch: the seeded permutation is cut into mega-chunks of ``MEGA`` global batches, each
    chunk sorted by length and cut into global batches (``batch_size x world``), and the batches
    are shuffled with the same generator. The order is still a pure function of (seed, epoch), so
    skipping and resuming work exactly as for the plain sampler. Under DDP rank r takes every
    ``world``-th index, which keeps each rank's batch inside one global batch.
    """

    MEGA = 50  # global batches per sorted chunk: enough to group lengths, few enough to stay random

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 epoch_fn: Callable[[], int] | None = None):
        super().__init__(len(lengths), seed, rank, world, epoch_fn)
        self.lengths, self.batch_size = list(lengths), batch_size

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        group = self.batch_size * self.world
        batches: list[list[int]] = []
        for start in range(0, self.n, group * self.MEGA):
            chunk = sorted(perm[start:start + group * self.MEGA], key=lambda i: -self.lengths[i])
            batches += [chunk[j:j + group] for j in range(0, len(chunk), group)]
        # at most one short batch (the end of the last chunk): it stays last, so drop_last drops it
        # and every batch before it is aligned to the global batch size
        short = [b for b in batches if len(b) < group]
        full = [b for b in batches if len(b) == group]
        order = [i for k in torch.randperm(len(full), generator=g).tolist() for i in full[k]]
        order += [i for b in short for i in b]
        usable = len(order) - len(order) % self.world
        return order[self.rank:usable:self.world]


class TaskDataModule(L.LightningDataModule):
    """Train/val data of one task. ``corpus=True`` serves the task's pre-training corpus instead."""

    def __init__(self, cfg: Any, tokenizer, *, corpus: bool = False, runner: Any = None):
        super().__init__()
        self.cfg, self.tokenizer, self.corpus = cfg, tokenizer, corpus
        # a StepRunner whose plan has a ``data`` step: the tokenized splits come from the reuse store
        self.runner = runner
        self.task = build_task(cfg.task)
        self.splits: Splits | None = None
        self.train_data: list[Encoded] = []
        # what the train loader serves: the examples, or (train.packing) rows of whole examples
        self.train_items: list[Encoded] | list[list[Encoded]] = []
        self.val_data: list[Encoded] = []
        self.sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None

    @property
    def batch_size(self) -> int:
        return self.cfg.base.batch_size if self.corpus else self.cfg.train.batch_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_data:
            return
        seed = self.cfg.seed
        if self.corpus:
            base = self.cfg.base
            texts = self.task.corpus(base.num_examples, random.Random(seed if base.seed is None else base.seed))
            self.train_data = self.train_items = [encode_text(self.tokenizer, t, base.max_length) for t in texts]
            return
        self.splits = render_splits(self.task.splits(seed), self.tokenizer, self.cfg.task)
        if self.runner is not None and self.runner.steps.data is not None:
            data = tokenized_data(self.cfg, self.tokenizer, self.splits, self.runner)  # memory-mapped
            self.train_data, self.val_data = data["train"], data["val"]
            # the train examples live on as the step's arrays; evaluation reads val and test only,
            # so the Python objects of a large train split are not held a second time
            self.splits = Splits([], self.splits.val, self.splits.test)
        else:
            enc = partial(encode, self.tokenizer, max_length=self.cfg.task.max_length)
            self.train_data = [enc(e) for e in self.splits.train]
            self.val_data = [enc(e) for e in self.splits.val]
        self.train_items = self.train_data
        if self.packing:
            # rows are packed once (a pure function of the data); the sampler shuffles rows per epoch
            rows = pack_rows(self.train_lengths(), self.pack_width)
            self.train_items = [[self.train_data[i] for i in row] for row in rows]

    def train_lengths(self) -> list[int]:
        if isinstance(self.train_data, TokenizedSplit):
            return self.train_data.lengths
        return [len(e.input_ids) for e in self.train_data]

    @property
    def packing(self) -> bool:
        """Packed rows for fine-tuning (the base pre-training corpus is always padded)."""
        return bool(self.cfg.train.packing) and not self.corpus

    @property
    def pack_width(self) -> int:
        return pack_length(self.cfg.train, self.cfg.task)

    def _loader(self, data: list, sampler=None, collate_fn=None) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=sampler is not None,
            collate_fn=collate_fn or partial(collate, pad_id=self.tokenizer.pad_token_id),
            num_workers=self.cfg.train.num_workers,
            # Own generator: creating the iterator must not draw from the global RNG (dropout),
            # or a resumed run's RNG stream would drift from an uninterrupted one's.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer else None
        if self.cfg.train.group_by_length and not self.packing and not self.corpus:
            self.sampler = LengthGroupedSampler(self.train_lengths(), self.batch_size,
                                                self.cfg.seed, rank, world, epoch_fn=epoch_fn)
        else:
            self.sampler = ResumableSampler(len(self.train_items), self.cfg.seed, rank, world, epoch_fn=epoch_fn)
        if self._resume is not None:
            self.sampler.skip(*self._resume)
            self._resume = None
        collate_fn = (partial(collate_packed, width=self.pack_width, pad_id=self.tokenizer.pad_token_id)
                      if self.packing else None)
        return self._loader(self.train_items, self.sampler, collate_fn)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data)

    def batches_per_epoch(self) -> int:
        world = self.trainer.world_size if self.trainer else 1
        return len(self.train_items) // world // self.batch_size

    # -- resume: where in the epoch the data stream stood ---------------------------------
    def state_dict(self) -> dict[str, int]:
        # current_epoch, not epoch_progress: at an epoch-end save the epoch counts as processed
        # already, yet Lightning resumes *into* that epoch (and finds it exhausted).
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.trainer.current_epoch, "batches_done": int(done), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (state["epoch"], state["batches_done"] * state["batch_size"])
