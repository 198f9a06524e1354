"""Find run dirs under any tree and read what each left behind.

Every reader is tolerant: other parts of ftlab add files and columns over time (gate sparsity,
mask validation, reuse summaries), so a missing optional file or column is simply absent, and a
run without ``metrics.json`` is kept as *unfinished* rather than dropped.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

#: files whose presence makes a directory a run dir (``eval.json``: ``python -m ftlab.evaluate``)
RUN_MARKERS = ("config.yaml", "metrics.json", "loss_log.csv", "eval.json")
#: sub-directories of a run that never hold another run
_NOT_RUNS = {"checkpoints", "adapter", "model", "lightning_logs", "wandb", "analysis", "plots"}


@dataclass
class RunRecord:
    path: Path
    rel: str  # path relative to the analysed root (the run's id in every table)
    config: dict[str, Any] = field(default_factory=dict)  # flattened dotted keys
    metrics: dict[str, Any] | None = None
    loss_log: pd.DataFrame | None = None
    sparsity_log: pd.DataFrame | None = None
    history: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None  # eval.json of ``python -m ftlab.evaluate`` (lm-eval scores)
    problems: list[str] = field(default_factory=list)  # unreadable files, in words

    @property
    def finished(self) -> bool:
        """A run that wrote metrics.json, or a model dir scored by ``ftlab.evaluate``."""
        return self.metrics is not None or self.eval is not None

    @property
    def status(self) -> str:
        return "finished" if self.finished else "unfinished"

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def last_step(self) -> int | None:
        if self.loss_log is not None and "step" in self.loss_log and len(self.loss_log):
            return int(self.loss_log["step"].max())
        return None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping; lists become compact JSON so they compare and print."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    if isinstance(node, (list, tuple)):
        return {key: json.dumps(node, separators=(",", ":"), default=str)}
    return {key: node}


def find_run_dirs(root: Path) -> list[Path]:
    """Directories holding a run marker; hidden dirs (``.hydra``, the reuse cache) and a run's own
    artefact dirs are not searched."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _NOT_RUNS)
        if any(m in filenames for m in RUN_MARKERS):
            found.append(Path(dirpath))
    return sorted(found)


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problems.append(f"{path.name}: unreadable ({err})")
        return None


def _read_csv(path: Path, problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        problems.append(f"{path.name}: unreadable ({err})")
        return None
    for col in frame.columns:
        frame[col] = _numeric(frame[col])
    return frame


def _numeric(col: pd.Series) -> pd.Series:
    converted = pd.to_numeric(col, errors="coerce")
    # keep text columns as text; a numeric column with blanks (sparsity of ungated runs) -> NaN
    return converted if converted.notna().any() or col.isna().all() else col


def load_run(path: Path, root: Path) -> RunRecord:
    path = Path(path)
    rec = RunRecord(path=path, rel=str(path.relative_to(root)) if path != root else ".")
    cfg_file = path / "config.yaml"
    if cfg_file.is_file():
        try:
            rec.config = flatten(yaml.safe_load(cfg_file.read_text()) or {})
        except (OSError, yaml.YAMLError) as err:
            rec.problems.append(f"config.yaml: unreadable ({err})")
    metrics = _read_json(path / "metrics.json", rec.problems)
    rec.metrics = metrics if isinstance(metrics, dict) else None
    rec.history = _read_json(path / "training_history.json", rec.problems)
    rec.validation = _read_json(path / "validation_report.json", rec.problems)
    evaluated = _read_json(path / "eval.json", rec.problems)
    rec.eval = evaluated if isinstance(evaluated, dict) else None
    rec.loss_log = _read_csv(path / "loss_log.csv", rec.problems)
    rec.sparsity_log = _read_csv(path / "sparsity_log.csv", rec.problems)
    return rec


def load_runs(root: Path) -> list[RunRecord]:
    root = Path(root)
    return [load_run(d, root) for d in find_run_dirs(root)]


def find_sweep_files(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` in a sweep dir under ``root`` (hidden and artefact dirs skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(Path(root)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _NOT_RUNS)
        if name in filenames:
            out.append(Path(dirpath) / name)
    return out


def _relative(path: Path, root: Path) -> str:
    return str(path.parent.relative_to(root)) if path.parent != Path(root) else "."


def find_summaries(root: Path, name: str) -> list[tuple[str, dict[str, Any]]]:
    """``(sweep dir relative to root, content)`` of every JSON summary ``name`` under ``root``."""
    out = []
    for path in find_sweep_files(root, name):
        data = _read_json(path, [])
        if isinstance(data, dict):
            out.append((_relative(path, Path(root)), data))
    return out


def find_reuse_summaries(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(sweep dir relative to root, reuse_summary.json)`` of every sweep under ``root``."""
    return find_summaries(root, "reuse_summary.json")


def load_search_logs(root: Path) -> list[tuple[str, list[dict[str, str]]]]:
    """``(sweep dir, rows of search_log.csv)`` of every stage search under ``root``."""
    out = []
    for path in find_sweep_files(root, "search_log.csv"):
        with open(path, newline="") as fh:
            out.append((_relative(path, Path(root)), list(csv.DictReader(fh))))
    return out
