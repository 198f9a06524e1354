"""Recognise a failed write (disk full, quota, read-only filesystem, file size limit) anywhere in a
job and turn it into one :class:`ftlab.core.errors.WriteError` line naming the path.

Libraries report the same condition in different shapes: Python's ``OSError`` (with ``errno`` and
``filename``), torch's ``RuntimeError`` from its zip writer, safetensors' own error whose text
carries the OS error; the path is the file the caller was writing, else the one the library names.
"""

from __future__ import annotations

import errno
from pathlib import Path

from ftlab.core.errors import WriteError

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
#: how the OS errors above read inside other libraries' messages
_TEXTS = ("No space left on device", "StorageFull", "Disk quota exceeded", "QuotaExceeded",
          "Read-only file system", "ReadOnlyFilesystem", "File too large", "FileTooLarge",
          "file write failed")


def _reason(err: BaseException) -> str | None:
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        return err.strerror or str(err)
    text = str(err)
    for needle in _TEXTS:
        if needle in text:
            return "No space left on device" if needle == "file write failed" else needle
    return None


def write_failure(err: BaseException, path: str | Path | None = None) -> WriteError | None:
    """The :class:`WriteError` ``err`` (or an exception it was raised from) stands for, else ``None``."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, WriteError):
            return cur
        reason = _reason(cur)
        if reason is not None:
            named = getattr(cur, "filename", None) if isinstance(cur, OSError) else None
            # the caller's path first: libraries write through temporaries of their own (fsspec)
            return WriteError(path or named or "a file of the run", reason)
        cur = cur.__cause__ or cur.__context__
    return None
