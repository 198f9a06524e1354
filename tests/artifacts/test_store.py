"""The artifact store: atomic publish, manifest checks, damaged entries are misses and get rebuilt,
and the ``python -m ftlab.cache`` tools."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ftlab.artifacts.store import ArtifactStore
from ftlab.cache import main as cache_main
from ftlab.core.errors import ConfigError
from ftlab.reuse.cache_admin import parse_size


def key(n: int) -> str:
    return f"{n:064x}"


def builder(counter: list, payload: bytes = b"x" * 4096):
    def build(artifact: Path) -> None:
        counter.append(1)
        (artifact / "sub").mkdir()
        (artifact / "sub" / "data.bin").write_bytes(payload)
        (artifact / "note.txt").write_text("hello")

    return build


def build(store: ArtifactStore, k: str, counter: list, **kw):
    return store.get_or_build(k, builder(counter, **kw), kind="test", parent=None, config={"k": k}, version=1)


def test_build_once_then_hit_with_config_and_manifest_beside_the_artifact(tmp_path):
    store, n = ArtifactStore(tmp_path / "cache"), []
    first = build(store, key(1), n)
    second = build(store, key(1), n)
    assert (first.hit, second.hit, len(n)) == (False, True, 1)
    assert (second.entry.artifact / "sub" / "data.bin").read_bytes() == b"x" * 4096
    info = second.entry.info()
    assert info["key"] == key(1) and info["config"] == {"k": key(1)} and info["kind"] == "test"
    manifest = json.loads((second.entry.root / "manifest.json").read_text())
    assert set(manifest["files"]) == {"artifact/sub/data.bin", "artifact/note.txt", "config.json"}
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # staging renamed away
    assert not (tmp_path / "cache" / "locks" / f"{key(1)}.lock").exists()


def test_failed_build_publishes_nothing_and_releases_the_lock(tmp_path):
    store = ArtifactStore(tmp_path / "cache")

    def broken(artifact: Path) -> None:
        (artifact / "half.bin").write_bytes(b"half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError):
        store.get_or_build(key(2), broken, kind="test", parent=None, config={}, version=1)
    assert store.lookup(key(2)) is None
    assert not list((tmp_path / "cache" / "tmp").iterdir())
    n = []
    assert build(store, key(2), n).hit is False and len(n) == 1  # lock was released


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "no_manifest"])
def test_damaged_entry_is_a_miss_is_reported_by_verify_and_is_rebuilt(tmp_path, damage, capsys):
    store, n = ArtifactStore(tmp_path / "cache"), []
    entry = build(store, key(3), n).entry
    data = entry.artifact / "sub" / "data.bin"
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[100] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:1000])
    elif damage == "delete":
        data.unlink()
    else:
        (entry.root / "manifest.json").unlink()
    assert store.lookup(key(3)) is None
    assert cache_main(["--cache-dir", str(tmp_path / "cache"), "verify"]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    again = build(store, key(3), n)
    assert again.hit is False and len(n) == 2
    assert (again.entry.artifact / "sub" / "data.bin").read_bytes() == b"x" * 4096
    assert cache_main(["--cache-dir", str(tmp_path / "cache"), "verify"]) == 0


def test_verify_delete_removes_damaged_entries(tmp_path, capsys):
    store, n = ArtifactStore(tmp_path / "cache"), []
    good, bad = build(store, key(4), n).entry, build(store, key(5), n).entry
    (bad.artifact / "note.txt").write_text("HELLO")  # same size, different bytes
    assert cache_main(["--cache-dir", str(tmp_path / "cache"), "verify", "--delete"]) == 0
    out = capsys.readouterr().out
    assert f"DAMAGED  {key(5)}" in out and "(removed)" in out and f"ok       {key(4)}" in out
    assert not bad.root.exists() and store.lookup(good.key) is not None


def test_ls_lists_keys_kinds_sizes_and_configs(tmp_path, capsys):
    store, n = ArtifactStore(tmp_path / "cache"), []
    build(store, key(6), n)
    assert cache_main(["--cache-dir", str(tmp_path / "cache"), "ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["key"], r["kind"], r["config"]) for r in rows] == [(key(6), "test", {"k": key(6)})]
    assert rows[0]["size"] > 4096
    assert cache_main(["--cache-dir", str(tmp_path / "cache"), "ls", "-v"]) == 0
    out = capsys.readouterr().out
    assert key(6)[:16] in out and "1 entries" in out and f'k: "{key(6)}"' in out


def test_gc_by_date_and_by_size_budget_least_recently_used_first(tmp_path):
    store, n = ArtifactStore(tmp_path / "cache"), []
    entries = [build(store, key(10 + i), n, payload=b"y" * 100_000).entry for i in range(3)]
    now = time.time()
    for age_days, e in zip((30, 20, 1), entries):
        os.utime(e.root / "last_used", (now - age_days * 86400,) * 2)
    since = time.strftime("%Y-%m-%d", time.localtime(now - 25 * 86400))
    root = str(tmp_path / "cache")
    assert cache_main(["--cache-dir", root, "gc", "--unused-since", since, "--dry-run"]) == 0
    assert all(e.root.exists() for e in entries)
    assert cache_main(["--cache-dir", root, "gc", "--unused-since", since]) == 0
    assert [e.root.exists() for e in entries] == [False, True, True]
    assert cache_main(["--cache-dir", root, "gc", "--max-size", "150K"]) == 0
    assert [e.root.exists() for e in entries] == [False, False, True]  # the older of the two went
    assert store.lookup(entries[2].key) is not None


def test_gc_removes_builds_abandoned_by_crashed_jobs(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    staging = store.stage(key(20))  # a builder that died before publishing (no lock held)
    (staging.artifact / "partial").write_bytes(b"p")
    assert cache_main(["--cache-dir", str(tmp_path / "cache"), "gc"]) == 0
    assert not staging.root.exists()


def test_cache_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert cache_main(["--cache-dir", str(tmp_path / "nope"), "ls"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ftlab: error: --cache-dir=") and "existing cache directory" in err and "\n" not in err
    ArtifactStore(tmp_path / "c").stage(key(1))
    assert cache_main(["--cache-dir", str(tmp_path / "c"), "gc", "--unused-since", "last week"]) == 2
    assert "--unused-since='last week' is invalid" in capsys.readouterr().err
    assert cache_main(["--cache-dir", str(tmp_path / "c"), "gc", "--max-size", "lots"]) == 2
    assert "--max-size='lots' is invalid" in capsys.readouterr().err
    assert (tmp_path / "c" / "tmp").is_dir() and list((tmp_path / "c" / "tmp").iterdir())  # nothing removed


def test_parse_size_units():
    assert parse_size("1024") == 1024
    assert parse_size("2K") == 2048
    assert parse_size("1.5G") == int(1.5 * 2**30)
    with pytest.raises(ConfigError):
        parse_size("-3M")


def test_invalid_keys_are_refused(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    for bad in ("../escape", "", "a/b", "x" * 200):
        with pytest.raises(ValueError):
            store.entry_dir(bad)


def test_import_entry_makes_a_verified_local_copy(tmp_path):
    shared, local, n = ArtifactStore(tmp_path / "shared"), ArtifactStore(tmp_path / "local"), []
    entry = build(shared, key(30), n).entry
    copy = local.import_entry(entry)
    assert copy.root.parent == tmp_path / "local" / "entries" and local.lookup(key(30)) is not None
    assert copy.info()["config"] == entry.info()["config"] and copy.info()["meta"]["copied_from"] == str(entry.root)
    assert (copy.artifact / "sub" / "data.bin").read_bytes() == (entry.artifact / "sub" / "data.bin").read_bytes()
    (copy.artifact / "note.txt").write_text("HELLO")  # a damaged local copy is replaced from the shared one
    again = local.import_entry(entry)
    assert (again.artifact / "note.txt").read_text() == "hello" and local.lookup(key(30)) is not None
