"""``ftlab.callbacks`` loads its Lightning callbacks on first use: importing the package (as the
light tools around it do) brings in neither Lightning, torch nor transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import ftlab.callbacks
print(sorted(m for m in ("lightning", "torch", "transformers") if m in sys.modules))
ftlab.callbacks.PeriodicCheckpoint
print("lightning" in sys.modules)
"""


def test_the_package_imports_without_lightning_and_callbacks_load_on_use():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_every_export_resolves_and_unknown_names_are_an_attribute_error():
    import ftlab.callbacks

    assert {"LossLog", "PeriodicCheckpoint", "TrainingHistory"} <= set(ftlab.callbacks.__all__)
    for name in ftlab.callbacks.__all__:
        assert getattr(ftlab.callbacks, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ftlab.callbacks.Nope  # noqa: B018
