"""Checksums of an artifact's files, so a truncated or corrupted entry never counts as a hit, and
:func:`fingerprint`: the identity of a file or directory outside the config that a step key covers."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(root: Path) -> dict[str, Any]:
    """``{"files": {relative posix path: {"sha256", "size"}}, "total_size"}`` of every regular file
    under ``root`` (symlinks are refused: they could point outside the entry)."""
    root = Path(root)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"{path}: symlinks cannot be stored in an artifact")
        if path.is_file():
            files[path.relative_to(root).as_posix()] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return {"files": files, "total_size": sum(f["size"] for f in files.values())}


def check_manifest(root: Path, manifest: dict[str, Any], *, checksums: bool = True) -> list[str]:
    """Problems found (empty = complete and intact). Sizes are compared first, so a truncated file
    is reported without hashing it; ``checksums=False`` stops there."""
    root = Path(root)
    problems: list[str] = []
    files = manifest.get("files")
    if not isinstance(files, dict):
        return ["manifest has no file list"]
    for rel, info in files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != info.get("size"):
            problems.append(f"{rel}: size {size} != {info.get('size')}")
        elif checksums and file_sha256(path) != info.get("sha256"):
            problems.append(f"{rel}: checksum mismatch")
    return problems


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def fingerprint(path: str | None) -> dict[str, Any] | None:
    """Identity of a data/mask file (content hash) or a local model directory (names, sizes and
    modification times of its files: hashing gigabytes of weights per run costs too much)."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return {"sha256": _file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns), "size": st.st_size}
    if p.is_dir():
        files = []
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                files.append([f.relative_to(p).as_posix(), st.st_size, st.st_mtime_ns])
        return {"dir": hashlib.sha256(repr(files).encode()).hexdigest()}
    return {"missing": str(path)}


#: Files of a model directory that hold weights, not the tokenizer: a tokenizer's identity skips them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".index.json")


def content_fingerprint(path: str | None, skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Identity of data by content: a file as :func:`fingerprint`; a directory (a
    ``datasets.save_to_disk`` set, a tokenizer's files) by each file's path and sha256, except
    names ending in ``skip``. Unlike a model directory's fingerprint, a copy of the same data
    elsewhere (new modification times) keeps its identity, and an edit that keeps sizes and times
    does not. The hashes are cached per (path, size, mtime), so a sweep reads each file once."""
    if not path or not Path(path).is_dir():
        return fingerprint(path)
    p = Path(path)
    files = []
    for f in sorted(p.rglob("*")):
        if f.is_file() and not f.name.endswith(skip):
            st = f.stat()
            files.append([f.relative_to(p).as_posix(), _file_sha256(str(f.resolve()), st.st_size, st.st_mtime_ns)])
    return {"dir_sha256": hashlib.sha256(repr(files).encode()).hexdigest()}


def tokenizer_fingerprint(path: str | None) -> dict[str, Any] | None:
    """A model directory's tokenizer by the content of its files other than weights."""
    return content_fingerprint(path, WEIGHT_SUFFIXES)
