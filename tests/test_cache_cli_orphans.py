"""``python -m ftlab.cache``: builds abandoned by a killed builder are reported by ``verify`` (and
removed by ``verify --delete``/``gc``), a live build is not; the CLI finds ``$FTLAB_CACHE_DIR``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from ftlab.artifacts.store import ArtifactStore
from ftlab.cache import main as cache_main
from ftlab.reuse.cache_admin import default_cache_dir

KEY = "a" * 64

_KILLED_BUILDER = """
import os, signal, sys
from ftlab.artifacts.store import ArtifactStore
store = ArtifactStore(sys.argv[1])
lock = store.lock(sys.argv[2])
assert lock.try_acquire()
staging = store.stage(sys.argv[2])
(staging.root / "artifact" / "half.bin").write_bytes(b"x" * 1000)
os.kill(os.getpid(), signal.SIGKILL)  # the job is killed mid-build: lock file and tmp dir stay
"""


def _killed_build(root: Path, key: str = KEY) -> Path:
    proc = subprocess.run([sys.executable, "-c", _KILLED_BUILDER, str(root), key], cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == -9
    (tmp,) = (root / "tmp").iterdir()
    assert (root / "locks" / f"{key}.lock").is_file()  # what made the old check call it alive
    return tmp


def test_verify_reports_and_deletes_the_build_dir_of_a_killed_builder(tmp_path: Path, capsys):
    root = tmp_path / "cache"
    tmp = _killed_build(root)
    assert cache_main(["--cache-dir", str(root), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"ORPHAN   tmp/{tmp.name}: an abandoned build" in out and "1 orphaned build dir left" in out
    assert tmp.is_dir()  # verify without --delete only reports
    assert cache_main(["--cache-dir", str(root), "verify", "--delete"]) == 0
    assert "(removed)" in capsys.readouterr().out and not tmp.exists()
    assert cache_main(["--cache-dir", str(root), "verify"]) == 0


def test_gc_removes_the_orphan_and_a_live_build_is_left_alone(tmp_path: Path, capsys):
    root = tmp_path / "cache"
    orphan = _killed_build(root)
    store = ArtifactStore(root)
    lock = store.lock("b" * 64)
    assert lock.try_acquire()
    try:
        live = store.stage("b" * 64)
        assert cache_main(["--cache-dir", str(root), "verify"]) == 1
        out = capsys.readouterr().out
        assert orphan.name in out and live.root.name not in out
        assert cache_main(["--cache-dir", str(root), "gc"]) == 0
        assert not orphan.exists() and live.root.is_dir()
    finally:
        lock.release()


def test_cli_uses_ftlab_cache_dir(tmp_path: Path, monkeypatch, capsys):
    root = tmp_path / "shared-cache"
    root.mkdir()
    monkeypatch.setenv("FTLAB_CACHE_DIR", str(root))
    assert default_cache_dir() == root
    assert cache_main(["ls"]) == 0
    assert f"0 entries, 0B in {root}" in capsys.readouterr().out
    monkeypatch.delenv("FTLAB_CACHE_DIR")
    assert default_cache_dir() == Path("experiments/.cache")
    assert default_cache_dir({"FTLAB_CACHE_DIR": "/x"}) == Path("/x")
