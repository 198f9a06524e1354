"""Issue 22, deliverable 3: a write that fails (disk full) ends the run with one line naming the
path; the half-written checkpoint is removed, the complete ones and the CSV logs stay whole, and
``resume=auto`` continues from the last complete checkpoint. The full disk is a real one: a
tmpfs of 1.5 MB mounted under the test's dir (root); elsewhere a per-file size limit
(``RLIMIT_FSIZE``) makes the kernel refuse the write the same way."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, ROOT, cli, read_csv
from ftlab.core.errors import WriteError
from ftlab.core.io import CsvAppender
from ftlab.core.writefail import write_failure
from ftlab.training.state import META_FILE, STATE_FILE, checkpoints_newest_first

RUN = [*FAST, "train.max_steps=40", "train.save_every_n_steps=4", "eval.enabled=false",
       "train.save_merged_model=false"]
#: the child under a file size limit: SIGXFSZ ignored, so the write fails with EFBIG instead
LIMITED = ("import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000)); sys.argv = ['ftlab', *sys.argv[1:]]; "
           "runpy.run_module('ftlab', run_name='__main__')")


def _small_disk(at: Path) -> bool:
    at.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(at)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_full_disk_one_line_complete_checkpoints_and_resume(tmp_path: Path):
    disk = tmp_path / "disk"
    mounted = _small_disk(disk)
    run_dir = disk / "run"
    try:
        if mounted:
            proc = cli("ftlab", *RUN, f"hydra.run.dir={run_dir}")
        else:
            proc = subprocess.run([sys.executable, "-c", LIMITED, *RUN, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ftlab:")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"ftlab: error: cannot write {run_dir}/"), lines[0]
        assert ("No space left on device" if mounted else "File too large") in lines[0]
        assert "Traceback" not in proc.stderr + proc.stdout
        leftovers = [p for p in run_dir.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
        assert leftovers == []  # no half checkpoint, no temporary
        complete = checkpoints_newest_first(run_dir)
        for ckpt in complete:
            meta = json.loads((ckpt / META_FILE).read_text())
            assert (ckpt / STATE_FILE).stat().st_size == meta["state_bytes"], ckpt
        _, rows = read_csv(run_dir / "loss_log.csv")
        assert all(None not in r.values() and r["step"].isdigit() for r in rows)  # no half row
        newest = json.loads((complete[0] / META_FILE).read_text())["global_step"] if complete else 0
        copy = tmp_path / "moved"  # the user frees space: here, the run dir moves to a roomy disk
        shutil.copytree(run_dir, copy)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
    if mounted:
        assert newest >= 4  # the disk took some checkpoints before it was full
    resumed = cli("ftlab", *RUN, f"hydra.run.dir={copy}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == newest and metrics["train_steps"] == 40


def test_library_shapes_of_a_full_disk_become_one_write_error(tmp_path: Path):
    full = OSError(errno.ENOSPC, "No space left on device", "/x/tmpfile")
    assert write_failure(full, tmp_path / "state.ckpt").path == str(tmp_path / "state.ckpt")
    assert write_failure(full).path == "/x/tmpfile"
    torch_style = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert "No space left" in write_failure(torch_style, "p").reason
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("Error while serializing") from inner
    except RuntimeError as outer:
        assert isinstance(write_failure(outer), WriteError)
    assert write_failure(ValueError("a bug, not a disk")) is None


def test_csv_append_that_fails_leaves_no_half_row(tmp_path: Path, monkeypatch):
    log = CsvAppender(tmp_path / "log.csv", ["step", "loss"])
    log.open()
    log.append({"step": 1, "loss": 0.5})
    before = (tmp_path / "log.csv").read_bytes()

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            self.fh.write(text[:3])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: _Wrap(real_open(*a, **k), Full))
    with pytest.raises(OSError):
        log.append({"step": 2, "loss": 0.25})
    monkeypatch.undo()
    assert (tmp_path / "log.csv").read_bytes() == before


class _Wrap:
    def __init__(self, fh, cls):
        self.fh, self.inner = fh, cls(fh)

    def __enter__(self):
        return self.inner

    def __exit__(self, *exc):
        self.fh.close()
