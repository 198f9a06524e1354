"""Trainable-only states (issue 10): what a checkpoint holds, the foundation it records, and the
refusals and fall-backs of a resume. Pure-function tests first, then tiny end-to-end runs."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import FAST, cli, compose
from ftlab.artifacts.manifest import build_manifest
from ftlab.artifacts.store import ArtifactStore
from ftlab.core.errors import ConfigError, FtlabError
from ftlab.recipe.run import run
from ftlab.training.foundation import config_diff, foundation_mismatch
from ftlab.training.resume import resume_checkpoint
from ftlab.training.state import (
    META_FILE,
    RNG_KEY,
    STATE_FILE,
    STATE_FORMAT,
    STATE_KEY,
    check_state_dict,
    checkpoints_newest_first,
    format_problem,
    load_state,
    migrate_state,
    read_state,
    snapshot_trainable,
    state_info,
    state_mismatch,
    state_problem,
    trainable_only,
)

MARKER = Path("/tmp/ftlab-test-pickle-executed")


class Evil:
    """Unpickling this object would write MARKER: a weights_only load must never get there."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


def fnd(model: str = "m1", base: str | None = None, mask: str | None = "k1", digest: str | None = None,
        level: float = 0.5) -> dict:
    rec = lambda key, cfg, dg=None: {"key": key * 8, "kind": "x", "config": cfg, "digest": dg}  # noqa: E731
    return {"model": rec(model, {"model.arch": "llama"}),
            "base": rec(base, {"base.steps": 8}, digest) if base else None,
            "mask": rec(mask, {"sparsity.level": level}) if mask else None}


def test_foundation_mismatch_names_the_step_and_the_setting():
    assert foundation_mismatch(fnd(), fnd()) is None
    why = foundation_mismatch(fnd(mask="k1", level=0.5), fnd(mask="k2", level=0.6))
    assert why.startswith("mask key k1k1k1k1k1k1 != this run's k2k2k2k2k2k2") and "sparsity.level: 0.5 -> 0.6" in why
    assert "it stands on no base step, this run on base key" in foundation_mismatch(fnd(), fnd(base="b1"))
    # digests count only where both sides were cached
    assert foundation_mismatch(fnd(base="b1", digest="aa" * 32), fnd(base="b1", digest=None)) is None
    why = foundation_mismatch(fnd(base="b1", digest="aa" * 32), fnd(base="b1", digest="bb" * 32))
    assert "rebuilt with different content" in why and "bbbbbbbbbbbb" in why
    assert config_diff({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2}) == "a.b: 1 -> 2"


class Tiny(nn.Module):
    def __init__(self, rank: int = 2):
        super().__init__()
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, 8))
        self.register_buffer("persistent", torch.zeros(3))


def test_trainable_only_keeps_what_trains_and_checks_shapes():
    m = Tiny()
    sd = trainable_only(m.state_dict(), m)
    assert list(sd) == ["lora_A"]
    assert check_state_dict(sd, m) is None and check_state_dict(m.state_dict(), m) is None  # format 1: whole
    assert "lacks the trainable tensor 'lora_A'" in check_state_dict({}, m)
    assert "'bogus'" in check_state_dict({**sd, "bogus": torch.zeros(1)}, m)
    info = state_info(m, fnd())
    assert info["format"] == STATE_FORMAT and info["trainable"] == {"lora_A": [2, 8]}
    assert state_mismatch(info, m, fnd()) is None
    assert "shape [2, 8], this run's is [4, 8]" in state_mismatch(info, Tiny(rank=4), fnd())
    assert state_mismatch(info, m, fnd(model="m2")).startswith("model key")
    assert "format 1" in state_mismatch({**info, "format": 1}, m, None)
    assert "its state format is 3" in state_mismatch({**info, "format": 3}, m, None)


def format_1(m: nn.Module, rng: bool = True) -> dict:
    """A state as format 1 wrote it: Lightning's checkpoint with every weight and no record."""
    state = {"state_dict": dict(m.state_dict()), "global_step": 3, "optimizer_states": []}
    if rng:
        state[RNG_KEY] = {"torch": torch.get_rng_state()}
    return state


def save(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


def test_format_1_is_migrated_in_memory_to_the_current_format_with_one_line(caplog, tmp_path):
    m = Tiny()
    old = format_1(m)
    with caplog.at_level("INFO", logger="ftlab"):
        new = migrate_state(old, m, "ck/state.ckpt")
    assert list(new["state_dict"]) == ["lora_A"] and torch.equal(new["state_dict"]["lora_A"], m.lora_A)
    assert new[STATE_KEY]["format"] == STATE_FORMAT and new[STATE_KEY]["trainable"] == {"lora_A": [2, 8]}
    assert new[STATE_KEY]["foundation"] is None and state_mismatch(new[STATE_KEY], m, fnd()) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("ck/state.ckpt: migrated a format-1 state") and "kept its 1 trainable tensors" in line
    caplog.clear()
    with caplog.at_level("INFO", logger="ftlab"):
        assert migrate_state(new, m, "ck/state.ckpt") is new  # current: untouched, nothing logged
        rng, losses = load_state(format_1(m, rng=False), m, fnd(), "ck/state.ckpt")
    assert rng is None and losses == []
    assert [r.getMessage().endswith("random draws differ from an uninterrupted run's") for r in caplog.records] == [True]
    # a format-1 state of another model (a key this model has not) and one lacking what trains
    with pytest.raises(FtlabError, match="ck cannot be resumed: it holds 'bogus', which this run's model has not"):
        migrate_state({"state_dict": {**m.state_dict(), "bogus": torch.zeros(1)}}, m, "ck")
    with pytest.raises(FtlabError, match="ck cannot be resumed: it lacks the trainable tensor 'lora_A'"):
        load_state({"state_dict": {"frozen.weight": m.frozen.weight}}, m, None, "ck")
    # under FSDP the module's own names are gone (flat shards): the record taken before wrapping answers
    wrapped = Tiny()
    snapshot_trainable(wrapped)
    wrapped.lora_A = nn.Parameter(torch.zeros(0))  # what a rank's shard looks like
    migrated = read_state(save(tmp_path / "old.ckpt", format_1(m)), wrapped)
    assert migrated[STATE_KEY]["trainable"] == {"lora_A": [2, 8]} and list(migrated["state_dict"]) == ["lora_A"]


def test_a_newer_format_is_refused_in_one_line_naming_the_file_and_the_readable_formats(tmp_path):
    m = Tiny()
    newer = {"state_dict": trainable_only(m.state_dict(), m), STATE_KEY: {**state_info(m, None), "format": 3}}
    with pytest.raises(FtlabError, match=r"^ck/state.ckpt cannot be resumed: its state format is 3; this ftlab "
                                         r"reads format 1, 2 \(1 is migrated on load\)$"):
        migrate_state(newer, m, "ck/state.ckpt")
    ck = tmp_path / "checkpoints" / "checkpoint-epoch0-step3"
    ck.mkdir(parents=True)
    torch.save(newer, ck / STATE_FILE)
    (ck / META_FILE).write_text(json.dumps({"global_step": 3, "epoch": 0, STATE_KEY: newer[STATE_KEY]}))
    assert format_problem({STATE_KEY: state_info(m, None)}, ck) is None and format_problem({}, ck) is None
    for resume in (str(ck), "auto"):
        with pytest.raises(ConfigError) as err:
            resume_checkpoint(resume, tmp_path)
        assert f"{ck / STATE_FILE}: its state format is 3; this ftlab reads format 1, 2" in str(err.value)
        assert "\n" not in str(err.value)


def test_state_problem_truncated_pickled_and_intact(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}, "global_step": 3}, good)
    assert state_problem(good, {"state_bytes": good.stat().st_size}) is None
    assert state_problem(good, {}) is None
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    kind, why = state_problem(cut, {"state_bytes": good.stat().st_size})
    assert kind == "incomplete" and "meta.json records" in why
    assert state_problem(cut, {})[0] == "incomplete"  # no size recorded (format 1): the zip is unreadable
    evil = tmp_path / "evil.ckpt"
    MARKER.unlink(missing_ok=True)
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Evil()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    kind, why = state_problem(evil, {})
    assert kind == "unsafe" and "weights_only" in why and "\n" not in why
    assert not MARKER.exists()


def test_entry_digest_is_the_artifact_content(tmp_path):
    store = ArtifactStore(tmp_path / "s")

    def entry(key: str, text: str):
        return store.get_or_build(key, lambda a: (a / "f.bin").write_text(text), kind="base", parent=None,
                                  config={"k": key}, version=1).entry

    assert entry("a", "same").digest() == entry("b", "same").digest() != entry("c", "other").digest()


# -- end to end: tiny runs ------------------------------------------------------------------
RUN = [*FAST, "train.max_steps=6", "train.save_every_n_steps=3", "eval.generate=false",
       "train.save_merged_model=false", "train.log_measurements=false", "adapter.dropout=0.1"]


def go(run_dir: Path, *overrides: str) -> dict:
    run(compose(*RUN, *overrides), run_dir=run_dir)
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_checkpoint_holds_trainable_tensors_and_its_record(tmp_path):
    go(tmp_path / "r")
    ckpt = checkpoints_newest_first(tmp_path / "r")[0]
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    meta = json.loads((ckpt / META_FILE).read_text())
    names = set(state[STATE_KEY]["trainable"])
    assert set(state["state_dict"]) == names and all("lora_" in n for n in names)
    assert not any(k.endswith("embed_tokens.weight") for k in state["state_dict"])  # no frozen weight
    assert meta[STATE_KEY] == state[STATE_KEY] and meta["state_bytes"] == (ckpt / STATE_FILE).stat().st_size
    assert set(meta[STATE_KEY]["foundation"]) == {"model", "base", "mask", "init"}
    assert meta[STATE_KEY]["foundation"]["model"]["key"]
    assert len(state["optimizer_states"][0]["state"]) == len(names)  # AdamW moments of trainable ones only


@pytest.mark.slow
def test_resume_refuses_another_model_or_mask_and_leaves_the_run_dir_alone(tmp_path):
    sparse = ["sparsity=unstructured", "sparsity.level=0.5"]
    go(tmp_path / "r", "model.init_seed=1", *sparse)
    before = snapshot(tmp_path / "r")
    with pytest.raises(ConfigError, match=r"model key \w{12} != this run's \w{12} \(derived.init_seed: 1 -> 2\)"):
        go(tmp_path / "r", "model.init_seed=2", *sparse, "resume=auto")
    with pytest.raises(ConfigError, match=r"mask key .*sparsity.level: 0.5 -> 0.6"):
        go(tmp_path / "r", "model.init_seed=1", "sparsity=unstructured", "sparsity.level=0.6", "resume=auto")
    assert snapshot(tmp_path / "r") == before  # nothing written, nothing overwritten


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    full = go(tmp_path / "r")
    newest = checkpoints_newest_first(tmp_path / "r")[0]
    state = newest / STATE_FILE
    recorded = json.loads((newest / META_FILE).read_text())["state_bytes"]
    state.write_bytes(state.read_bytes()[:1000])  # a copy that stopped half-way
    shutil.rmtree(tmp_path / "r" / "adapter")
    with caplog.at_level("WARNING", logger="ftlab"):
        resumed = go(tmp_path / "r", "resume=auto")
    lines = [r.getMessage() for r in caplog.records if "skipping incomplete" in r.getMessage()]
    assert lines == [f"resume=auto: skipping incomplete {newest.name} (state.ckpt is 1000 bytes, meta.json records "
                     f"{recorded}); resuming from checkpoint-epoch0-step3 instead"]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["resumed_from_step"] == 3
    assert same(full, resumed)  # bit for bit the uninterrupted result


@pytest.mark.slow
@pytest.mark.parametrize("with_meta", [True, False], ids=["meta-auto", "no-meta-by-path"])
def test_format_1_checkpoint_with_every_weight_is_migrated_and_resumes_exactly(tmp_path, caplog, with_meta):
    """A checkpoint as format 1 wrote it (Lightning's full state: every frozen weight, no record;
    ``meta.json`` with step and epoch only, or none: a state file kept by hand) resumes bit for bit
    like the uninterrupted run."""
    from ftlab.adapters.registry import get_adapter
    from ftlab.recipe.run import prepare_model
    from ftlab.training.module import FtlabModule

    full = go(tmp_path / "r")
    keep = checkpoints_newest_first(tmp_path / "r")[1]  # step 3
    shutil.rmtree(checkpoints_newest_first(tmp_path / "r")[0])
    cfg = compose(*RUN)
    _, model = prepare_model(cfg)
    every = FtlabModule(get_adapter("lora").build(model, cfg.adapter, cfg), cfg).state_dict()
    state = torch.load(keep / STATE_FILE, map_location="cpu", weights_only=True)
    state["state_dict"] = {**every, **state["state_dict"]}  # what the previous format saved
    del state[STATE_KEY]
    torch.save(state, keep / STATE_FILE)
    meta = json.loads((keep / META_FILE).read_text())
    if with_meta:
        (keep / META_FILE).write_text(json.dumps({k: meta[k] for k in ("global_step", "epoch", "epoch_end")}))
    else:
        (keep / META_FILE).unlink()
    with caplog.at_level("INFO", logger="ftlab"):
        resumed = go(tmp_path / "r", "resume=auto" if with_meta else f"resume={keep}")
    lines = [r.getMessage() for r in caplog.records if "migrated a format-1 state" in r.getMessage()]
    assert len(lines) == 1 and f"kept its {len(meta[STATE_KEY]['trainable'])} trainable tensors" in lines[0]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["resumed_from_step"] == 3
    assert same(full, resumed)


@pytest.mark.slow
def test_pickled_object_in_a_checkpoint_is_refused_in_one_line(tmp_path):
    go(tmp_path / "r")
    ckpt = checkpoints_newest_first(tmp_path / "r")[0]
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    state["extra"] = Evil()
    torch.save(state, ckpt / STATE_FILE)
    MARKER.unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="a checkpoint of plain tensors .*weights_only"):
        go(tmp_path / "r", "resume=auto")
    res = cli("ftlab", *RUN, f"resume={ckpt}", f"hydra.run.dir={tmp_path / 'cli'}")
    assert res.returncode == 2 and not MARKER.exists()
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("ftlab: error: resume=") and "Traceback" not in res.stderr


BASE = ["base.enabled=true", "base.seed=7", "base.steps=4", "base.batch_size=8", "base.num_examples=32",
        "base.warmup_steps=1"]


@pytest.mark.slow
def test_missing_base_artifact_is_rebuilt_and_a_different_one_refused(tmp_path, caplog):
    cache = tmp_path / "cache"
    full = go(tmp_path / "r", *BASE, f"paths.cache_dir={cache}")
    store = ArtifactStore(cache)
    (base,) = [e for e in store.entries() if e.info()["kind"] == "base"]
    digest = base.digest()
    meta_file = checkpoints_newest_first(tmp_path / "r")[0] / META_FILE
    assert json.loads(meta_file.read_text())[STATE_KEY]["foundation"]["base"]["digest"] == digest
    assert store.remove(base.key)
    with caplog.at_level("WARNING", logger="ftlab"):
        resumed = go(tmp_path / "r", *BASE, f"paths.cache_dir={cache}", "resume=auto")
    assert any("was not in the cache; rebuilt it" in r.getMessage() for r in caplog.records)
    assert same(full, resumed) and store.lookup(base.key).digest() == digest  # CPU: the same base again

    meta = json.loads(meta_file.read_text())  # now: trained on a base whose content differs
    meta[STATE_KEY]["foundation"]["base"]["digest"] = "0" * 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(FtlabError, match="base artifact .* was rebuilt with different content"):
        go(tmp_path / "r", *BASE, f"paths.cache_dir={cache}", "resume=auto")


@pytest.mark.slow
def test_stage_entry_on_another_foundation_is_refused_and_locks_released(tmp_path, capsys):
    cache = tmp_path / "cache"
    stages = ["schedule=stages", "schedule.stages=[{iters:3,lr:2e-3},{iters:3,lr:5e-4}]", f"paths.cache_dir={cache}"]
    go(tmp_path / "a", *stages)
    store = ArtifactStore(cache)
    (first,) = [e for e in store.entries() if json.loads((e.artifact / "meta.json").read_text())["stage_idx"] == 1]
    meta = json.loads((first.artifact / "meta.json").read_text())
    assert set(meta[STATE_KEY]["foundation"]) == {"model", "base", "mask", "init"}
    assert meta["state_bytes"] == (first.artifact / STATE_FILE).stat().st_size
    from ftlab.cache import main as cache_main

    assert cache_main(["--cache-dir", str(cache), "ls", "-v"]) == 0
    listing = capsys.readouterr().out
    trainable = sum(math.prod(s) for s in meta[STATE_KEY]["trainable"].values())
    assert f"{trainable:,} trainable values ({meta[STATE_KEY]['frozen_params']:,} frozen ones rebuilt" in listing
    # a damaged entry whose manifest was re-sealed: it claims another model under it
    meta[STATE_KEY]["foundation"]["model"]["key"] = "f" * 64
    (first.artifact / "meta.json").write_text(json.dumps(meta))
    manifest = build_manifest(first.root)
    for own in ("manifest.json", "last_used"):
        manifest["files"].pop(own, None)
    (first.root / "manifest.json").write_text(json.dumps(manifest))
    assert store.lookup(first.key) is not None
    with pytest.raises(FtlabError, match=r"stage entry .* cannot be resumed: model key ffffffffffff != this run's"):
        go(tmp_path / "b", "schedule=stages", "schedule.stages=[{iters:3,lr:2e-3},{iters:3,lr:1e-4}]",
           f"paths.cache_dir={cache}")
    assert not list((cache / "locks").glob("*.lock"))
