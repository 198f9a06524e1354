"""Padding-free batches: best-fit packing, the packed collate, block-diagonal attention that gives
each example exactly its unpacked losses, the length-grouped sampler, and a packed run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import compose, run_tiny
from ftlab.core.errors import ConfigError
from ftlab.data.datamodule import LengthGroupedSampler, ResumableSampler, TaskDataModule
from ftlab.data.encoding import IGNORE_INDEX, Encoded, collate
from ftlab.data.packing import (
    block_causal_mask,
    collate_packed,
    examples_in,
    model_inputs,
    pack_rows,
    padding_fraction,
    segment_ids,
)
from ftlab.models import build_model, build_tokenizer
from tolerance import assert_close


def test_pack_rows_places_every_example_once_within_width() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(500)]
    rows = pack_rows(lengths, 128)
    flat = sorted(i for row in rows for i in row)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    # best-fit decreasing leaves little room: fewer rows than one example per 60 tokens would need
    assert len(rows) <= -(-sum(lengths) // 128) + 2
    assert pack_rows(lengths, 128) == rows  # a pure function of the lengths
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([10, 200], 128)


def test_collate_packed_restarts_positions_and_ignores_cross_example_labels() -> None:
    a = Encoded([5, 6, 7], [IGNORE_INDEX, 6, 7])
    b = Encoded([8, 9], [8, 9])  # no prompt: its first label would be predicted from a's last token
    batch = collate_packed([[a, b], [b]], width=7, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0], [8, 9, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1], [0, 1, 0, 1, 2, 3, 4]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, -100], [-100, 9] + [-100] * 5]
    assert batch["attention_mask"].sum().item() == 7
    assert examples_in(batch) == 3
    # flash varlen boundaries over the flattened rows: a, b, a's row tail, b, b's row tail
    assert batch["cu_seq_lens"].tolist() == [0, 3, 5, 7, 9, 14] and batch["max_length"] == 5
    flash = model_inputs(batch, "flash_attention_2")
    assert "attention_mask" not in flash and flash["cu_seq_lens_q"] is batch["cu_seq_lens"]
    assert flash["max_length_k"] == 5 and flash["position_ids"] is batch["position_ids"]
    assert segment_ids(batch["position_ids"]).tolist() == [[0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1, 1]]
    mask = block_causal_mask(batch["position_ids"])[0, 0]
    assert mask[4].tolist() == [False, False, False, True, True, False, False]  # b sees only b
    assert mask[2].tolist() == [True, True, True, False, False, False, False]


def _examples(n: int, seed: int = 0) -> list[Encoded]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = [rng.randint(3, 258) for _ in range(rng.randint(2, 9))]
        a = [rng.randint(3, 258) for _ in range(rng.randint(1, 6))] + [1]
        out.append(Encoded(p + a, [IGNORE_INDEX] * len(p) + a))
    return out


def _token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per position: NLL of the next token (0 where the next label is ignored)."""
    nll = torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:].clamp(min=0), reduction="none")
    return nll * (labels[1:] != IGNORE_INDEX)


@pytest.mark.numerical
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_gives_each_example_its_unpacked_losses(attn: str) -> None:
    cfg = compose()
    tok = build_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=0).eval()
    model.config._attn_implementation = attn
    examples = _examples(9)
    rows_idx = pack_rows([len(e.input_ids) for e in examples], 32)
    rows = [[examples[i] for i in row] for row in rows_idx]
    batch = collate_packed(rows, 32, tok.pad_token_id)
    with torch.no_grad():
        packed = model(**model_inputs(batch, attn, torch.float32))
        for r, row in enumerate(rows):
            at = 0
            for e in row:
                n = len(e.input_ids)
                ids = torch.tensor([e.input_ids])
                alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
                want = _token_nll(alone, torch.tensor(e.labels))
                got = _token_nll(packed.logits[r, at:at + n], batch["labels"][r, at:at + n])
                # logits through reductions of up to intermediate_size terms, then a softmax over the vocabulary
                assert_close(got, want, ops=model.config.intermediate_size + model.config.vocab_size)
                at += n
        # the batch loss is the token-weighted mean, as for the same examples padded
        padded = collate(examples, tok.pad_token_id)
        want = model(**model_inputs(padded, attn)).loss
    assert_close(packed.loss, want, ops=model.config.intermediate_size + model.config.vocab_size)


def test_padding_fraction() -> None:
    assert padding_fraction(75, 100) == pytest.approx(0.25)
    assert padding_fraction(0, 0) == 0.0


def test_length_grouped_sampler_groups_lengths_and_resumes_exactly() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(10, 60) for _ in range(1000)]
    bs = 8

    def spread(order: list[int]) -> float:
        batches = [order[i:i + bs] for i in range(0, len(order) - bs + 1, bs)]
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)

    grouped = LengthGroupedSampler(lengths, bs, seed=3)
    order = list(grouped)
    assert sorted(order) == list(range(1000)) and len(grouped) == 1000
    assert spread(order) < 0.25 * spread(list(ResumableSampler(1000, seed=3)))
    grouped.set_epoch(1)
    assert list(grouped) != order  # a new order every epoch
    grouped.set_epoch(0)
    resumed = LengthGroupedSampler(lengths, bs, seed=3)
    resumed.skip(0, 5 * bs)
    assert list(resumed) == order[5 * bs:]
    # DDP: the ranks split each global batch, disjoint and complete
    ranks = [list(LengthGroupedSampler(lengths, bs, seed=3, rank=r, world=2)) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) + len(ranks[1]) == 1000
    assert spread(ranks[0]) < 0.25 * spread(list(ResumableSampler(1000, seed=3)))


def test_datamodule_serves_packed_rows_and_resumes_them() -> None:
    cfg = compose("task.num_examples=240", "train.packing=true", "train.batch_size=2")
    tok = build_tokenizer(cfg.model)
    dm = TaskDataModule(cfg, tok)
    dm.setup()
    assert dm.pack_width == 4 * cfg.task.max_length
    assert sorted(id(e) for row in dm.train_items for e in row) == sorted(id(e) for e in dm.train_data)
    assert dm.batches_per_epoch() == len(dm.train_items) // 2
    batches = list(dm.train_dataloader())
    assert all(b["input_ids"].shape == (2, dm.pack_width) for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    slots = sum(b["attention_mask"].numel() for b in batches)
    assert padding_fraction(real, slots) < 0.08  # 192 examples: the last rows weigh in
    dm2 = TaskDataModule(cfg, tok)
    dm2.setup()
    dm2.load_state_dict({"epoch": 0, "batches_done": 3, "batch_size": 2})
    again = list(dm2.train_dataloader())
    assert len(again) == len(batches) - 3
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(again, batches[3:], strict=True))


def test_group_by_length_datamodule_pads_less() -> None:
    def padding(*overrides: str) -> float:
        cfg = compose("task.num_examples=400", *overrides)
        dm = TaskDataModule(cfg, build_tokenizer(cfg.model))
        dm.setup()
        batches = list(dm.train_dataloader())
        assert len(batches) == dm.batches_per_epoch()
        return padding_fraction(sum(int(b["attention_mask"].sum()) for b in batches),
                                sum(b["attention_mask"].numel() for b in batches))

    assert padding("train.group_by_length=true") < 0.5 * padding()


def test_packing_pads_under_five_percent_on_capitalization() -> None:
    """The acceptance figure: one epoch of the default capitalization task, packed."""
    cfg = compose("train.packing=true", "train.batch_size=4")
    dm = TaskDataModule(cfg, build_tokenizer(cfg.model))
    dm.setup()
    batches = list(dm.train_dataloader())
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert padding_fraction(real, sum(b["attention_mask"].numel() for b in batches)) <= 0.05
    assert sum(examples_in(b) for b in batches) >= 0.95 * len(dm.train_data)


def test_packing_and_group_by_length_are_refused_together() -> None:
    from ftlab.preflight.validate import validate_config

    with pytest.raises(ConfigError, match="train.group_by_length"):
        validate_config(compose("train.packing=true", "train.group_by_length=true"))
    with pytest.raises(ConfigError, match="train.pack_length"):
        validate_config(compose("train.packing=true", "train.pack_length=16"))


@pytest.mark.slow
def test_packed_run_records_padding_fraction(run_dir: Path) -> None:
    run_tiny(run_dir, "task.num_examples=2000", "train.packing=true", "train.batch_size=4",
             "eval.generate=false", "train.save_merged_model=false")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["padding_fraction"] <= 0.05
    assert metrics["samples_per_sec"] > 0 and metrics["train_steps"] == 12
    padded = run_dir.parent / "padded"
    run_tiny(padded, "eval.generate=false", "train.save_merged_model=false")
    assert json.loads((padded / "metrics.json").read_text())["padding_fraction"] > 0.1
