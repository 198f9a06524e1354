"""TaskDataModule directly: padded batches and their label masks (loss on answer tokens only),
seeded order, DDP shards, the data position a checkpoint stores and a resume restores (through a
real Trainer), the corpus mode, and the packed and length-grouped paths."""

from __future__ import annotations

import lightning as L
import pytest

from conftest import compose
from ftlab.callbacks.checkpoints import PeriodicCheckpoint
from ftlab.data.datamodule import ResumableSampler, TaskDataModule
from ftlab.data.encoding import IGNORE_INDEX
from ftlab.models import build_tokenizer
from ftlab.training.state import STATE_FILE
from tiny_training import SMALL, tiny_fit, tiny_parts

BS = 8  # SMALL: 64 train examples, 8 per batch


def datamodule(*overrides: str) -> TaskDataModule:
    cfg = compose(*SMALL, *overrides)
    dm = TaskDataModule(cfg, build_tokenizer(cfg.model))
    dm.setup()
    return dm


def ids(batches) -> list[list[list[int]]]:
    return [b["input_ids"].tolist() for b in batches]


def test_padded_batches_mask_everything_but_the_answer_and_eos():
    dm = datamodule("task.max_length=64")  # no example is truncated
    tok = dm.tokenizer
    assert (len(dm.train_data), len(dm.val_data)) == (64, 8) and dm.batches_per_epoch() == 8
    order = list(ResumableSampler(64, dm.cfg.seed))
    batches = list(dm.train_dataloader())
    assert len(batches) == 8
    for k, b in enumerate(batches):
        examples = [dm.splits.train[i] for i in order[k * BS:(k + 1) * BS]]
        lengths = [len(tok.encode(e.prompt + e.answer, add_special_tokens=False)) + 1 for e in examples]
        assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (BS, max(lengths))
        for row, (e, n) in enumerate(zip(examples, lengths)):
            assert b["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
            assert (b["input_ids"][row, n:] == tok.pad_token_id).all()
            targets = [t for t in b["labels"][row].tolist() if t != IGNORE_INDEX]
            assert targets == tok.encode(e.answer, add_special_tokens=False) + [tok.eos_token_id]
            assert tok.decode(b["input_ids"][row, :n - len(targets)].tolist()) == e.prompt  # ignored: the prompt
    val = list(dm.val_dataloader())  # in order, nothing dropped
    assert sum(len(b["input_ids"]) for b in val) == 8
    assert tok.decode(val[0]["input_ids"][0][val[0]["attention_mask"][0] == 1].tolist()) == \
        dm.splits.val[0].prompt + dm.splits.val[0].answer + tok.eos_token


def test_order_is_a_function_of_seed_and_epoch():
    a, b, other = datamodule(), datamodule(), datamodule("seed=7")
    first = ids(a.train_dataloader())
    assert first == ids(b.train_dataloader())
    assert ids(other.train_dataloader()) != first
    epoch0 = list(ResumableSampler(64, a.cfg.seed))
    epoch1 = ResumableSampler(64, a.cfg.seed)
    epoch1.set_epoch(1)
    assert list(epoch1) != epoch0 and sorted(epoch1) == sorted(epoch0) == list(range(64))
    at_epoch1 = ResumableSampler(64, a.cfg.seed, epoch_fn=lambda: 1)  # how Lightning's epoch reaches it
    assert list(at_epoch1) == list(epoch1)


def test_ddp_ranks_take_disjoint_shards_of_one_permutation():
    full = list(ResumableSampler(66, seed=5))
    shards = [list(ResumableSampler(66, seed=5, rank=r, world=4)) for r in range(4)]
    assert all(len(s) == 16 for s in shards)  # 66 -> 64 usable, 16 per rank
    assert [shards[r][j] for j in range(16) for r in range(4)] == full[:64]
    sampler = ResumableSampler(66, seed=5, rank=1, world=4)
    it = iter(sampler)
    next(it), next(it)
    assert sampler.remaining() == 14


class Position(L.Callback):
    """The data position the datamodule would store, and every batch the fit trains on."""

    def __init__(self):
        self.states, self.batches = {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch["input_ids"].tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states[trainer.global_step] = trainer.datamodule.state_dict()


def test_resume_trains_on_exactly_the_batches_an_uninterrupted_fit_trains_on(tmp_path):
    cfg, dm, module = tiny_parts()
    straight = Position()
    tiny_fit(cfg, dm, module, [straight], max_steps=11)  # into the second epoch
    assert straight.states[3] == {"epoch": 0, "batches_done": 3, "batch_size": BS}
    assert straight.states[10] == {"epoch": 1, "batches_done": 2, "batch_size": BS}
    assert straight.batches[8:] != straight.batches[:3]  # epoch 1 is reshuffled
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path, every_n_steps=3, at_epoch_end=False)], max_steps=3)
    cfg, dm, module = tiny_parts()
    resumed = Position()
    tiny_fit(cfg, dm, module, [resumed], max_steps=11,
             ckpt=tmp_path / "checkpoints" / "checkpoint-epoch0-step3" / STATE_FILE)
    assert resumed.batches == straight.batches[3:]
    # a resume from an epoch end continues with the next epoch's order
    cfg, dm, module = tiny_parts()
    tiny_fit(cfg, dm, module, [PeriodicCheckpoint(tmp_path / "e", every_n_steps=None)], max_steps=8)
    cfg, dm, module = tiny_parts()
    after_epoch = Position()
    tiny_fit(cfg, dm, module, [after_epoch], max_steps=11,
             ckpt=tmp_path / "e" / "checkpoints" / "checkpoint-epoch0" / STATE_FILE)
    assert after_epoch.batches == straight.batches[8:]


def test_load_state_dict_skips_the_consumed_batches_once():
    dm, fresh = datamodule(), datamodule()
    dm.load_state_dict({"epoch": 0, "batches_done": 5, "batch_size": BS})
    assert ids(dm.train_dataloader()) == ids(fresh.train_dataloader())[5:]
    assert len(ids(dm.train_dataloader())) == 8  # the skip applies to the resumed epoch only


def test_corpus_mode_serves_plain_text_where_every_token_is_a_target():
    dm = datamodule("base.enabled=true", "base.num_examples=24", "base.batch_size=4", "base.max_length=48")
    corpus = TaskDataModule(dm.cfg, dm.tokenizer, corpus=True)
    corpus.setup()
    assert corpus.batch_size == 4 and len(corpus.train_data) == 24 and corpus.splits is None
    for e in corpus.train_data:
        assert e.labels == e.input_ids and len(e.input_ids) <= 48 and e.input_ids[-1] == dm.tokenizer.eos_token_id
    b = next(iter(corpus.train_dataloader()))
    assert b["input_ids"].shape[0] == 4 and "position_ids" not in b  # the corpus is never packed


def test_packed_rows_carry_each_examples_labels_but_its_first():
    dm = datamodule("train.packing=true", "train.batch_size=2")
    width = dm.pack_width
    assert width == 4 * dm.cfg.task.max_length
    order = list(ResumableSampler(len(dm.train_items), dm.cfg.seed))
    b = next(iter(dm.train_dataloader()))
    assert b["input_ids"].shape == (2, width)
    for r, item in enumerate(order[:2]):
        row = dm.train_items[item]
        want_ids, want_labels = [], []
        for e in row:
            want_ids += e.input_ids
            want_labels += [IGNORE_INDEX] + e.labels[1:]
        n = len(want_ids)
        assert b["input_ids"][r, :n].tolist() == want_ids and b["labels"][r, :n].tolist() == want_labels
        assert (b["labels"][r, n:] == IGNORE_INDEX).all() and int(b["attention_mask"][r].sum()) == n
        starts = (b["position_ids"][r, :n] == 0).nonzero().reshape(-1).tolist()
        assert len(starts) == len(row)  # positions restart at every example


def test_group_by_length_batches_cover_disjoint_length_ranges():
    dm = datamodule("train.group_by_length=true")
    plain = datamodule()
    batches = list(dm.train_dataloader())
    assert len(batches) == dm.batches_per_epoch() == 8
    spans = sorted((int(b["attention_mask"].sum(1).min()), int(b["attention_mask"].sum(1).max())) for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))  # one sorted chunk, cut
    slots = sum(b["input_ids"].numel() for b in batches)
    plain_slots = sum(b["input_ids"].numel() for b in plain.train_dataloader())
    assert slots < plain_slots  # the same examples, less padding
    assert ids(dm.train_dataloader()) == ids(datamodule("train.group_by_length=true").train_dataloader())


@pytest.mark.parametrize("overrides", [[], ["train.packing=true"], ["train.group_by_length=true"]])
def test_every_training_example_is_served_once_per_epoch(overrides):
    dm = datamodule(*overrides, "train.batch_size=1")
    served = sorted(tuple(r[m == 1].tolist()) for b in dm.train_dataloader()
                    for r, m in zip(b["input_ids"], b["attention_mask"]))
    rows = dm.train_items if dm.packing else [[e] for e in dm.train_data]
    assert served == sorted(tuple(t for e in row for t in e.input_ids) for row in rows)
    assert sorted(id(e) for row in rows for e in row) == sorted(id(e) for e in dm.train_data)
