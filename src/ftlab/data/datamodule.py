"""The LightningDataModule: seeded splits, a resumable shuffled sampler, padding collate."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from ftlab.data.encoding import Encoded, collate, encode_example, encode_text
from ftlab.data.tasks import Splits, build_task


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


class TaskDataModule(L.LightningDataModule):
    """Train/val data of one task. ``corpus=True`` serves the task's pre-training corpus instead."""

    def __init__(self, cfg: Any, tokenizer, *, corpus: bool = False):
        super().__init__()
        self.cfg, self.tokenizer, self.corpus = cfg, tokenizer, corpus
        self.task = build_task(cfg.task)
        self.splits: Splits | None = None
        self.train_data: list[Encoded] = []
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
            self.train_data = [encode_text(self.tokenizer, t, base.max_length) for t in texts]
            return
        self.splits = self.task.splits(seed)
        enc = partial(encode_example, self.tokenizer, max_length=self.cfg.task.max_length)
        self.train_data = [enc(e.prompt, e.answer) for e in self.splits.train]
        self.val_data = [enc(e.prompt, e.answer) for e in self.splits.val]

    def _loader(self, data: list[Encoded], sampler=None) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=sampler is not None,
            collate_fn=partial(collate, pad_id=self.tokenizer.pad_token_id),
            num_workers=self.cfg.train.num_workers,
            # Own generator: creating the iterator must not draw from the global RNG (dropout),
            # or a resumed run's RNG stream would drift from an uninterrupted one's.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self.sampler = ResumableSampler(len(self.train_data), self.cfg.seed, rank, world,
                                        epoch_fn=lambda: self.trainer.current_epoch)
        if self._resume is not None:
            self.sampler.skip(*self._resume)
            self._resume = None
        return self._loader(self.train_data, self.sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data)

    def batches_per_epoch(self) -> int:
        world = self.trainer.world_size if self.trainer else 1
        return len(self.train_data) // world // self.batch_size

    # -- resume: where in the epoch the data stream stood ---------------------------------
    def state_dict(self) -> dict[str, int]:
        # current_epoch, not epoch_progress: at an epoch-end save the epoch counts as processed
        # already, yet Lightning resumes *into* that epoch (and finds it exhausted).
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.trainer.current_epoch, "batches_done": int(done), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (state["epoch"], state["batches_done"] * state["batch_size"])
