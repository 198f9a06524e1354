"""The one error type users see: a single line naming the key, the bad value and what is allowed."""

from __future__ import annotations

import sys
from typing import Any


class FtlabError(Exception):
    """An error caused by user input. The CLI prints ``str(err)`` as one line and exits 2."""


class ConfigError(FtlabError):
    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: {allowed}")


def fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(key, value, allowed)


class UnknownKeyError(ConfigError):
    def __init__(self, key: str, node: str, allowed: str):
        FtlabError.__init__(self, f"{key} is not a key of {node}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, None, allowed


class WriteError(FtlabError):
    """A file of the run could not be written (disk full, quota, read-only dir): the run stops;
    what was complete before stays as it was."""

    def __init__(self, path: Any, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot write {path}: {reason}; files written before are intact "
                         "(resume=auto continues from the last complete checkpoint)")


def report_error(err: FtlabError) -> int:
    """Print ``err`` the way every ftlab CLI does (one line on stderr); returns the exit status 2."""
    print(f"ftlab: error: {err}", file=sys.stderr)
    return 2
