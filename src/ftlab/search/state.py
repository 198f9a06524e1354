"""``search_state.json``: every decision of a stage search, written atomically after each change.

Re-running the same sweep command reads it back: rungs already decided are not re-evaluated,
evaluations already finished keep their metric, and a job that finished before a crash but after
the last write is found again from its run dir (:func:`ftlab.search.state.harvest`). A state
written by a different search (other trials or options) is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftlab.core.errors import FtlabError
from ftlab.core.io import write_json
from ftlab.reuse.records import RECORD_FILE

STATE_FILE = "search_state.json"
STATE_VERSION = 1


@dataclass
class Evaluation:
    """One distinct prefix at one rung: the job that trains it and what it measured."""

    prefix: str  # prefix id (stage-k key + eval settings)
    key: str  # the stage-k cache key
    trial: int  # representative: the lowest alive trial with this prefix
    members: list[int]  # alive trials that share the prefix
    overrides: list[str]  # the job's overrides (truncated to k stages)
    job: int | None = None  # Hydra job number, once launched
    metric: float | None = None
    cache_hit: bool | None = None  # stage k served from the cache
    executed_iters: int = 0  # iterations this job trained (stages not served from the cache)
    runtime_s: float = 0.0  # seconds of those stages
    run_dir: str | None = None

    @property
    def done(self) -> bool:
        return self.run_dir is not None


@dataclass
class Rung:
    stage: int  # 1-based: jobs train stages 1..stage
    alive: list[int]
    evals: list[Evaluation]
    promoted: list[int] | None = None  # decided once every evaluation is done

    def metric_of(self) -> dict[int, float | None]:
        return {t: e.metric for e in self.evals for t in e.members}


@dataclass
class SearchState:
    fingerprint: str
    trials: list[list[str]]
    rungs: list[Rung] = field(default_factory=list)
    next_job: int = 0
    best: int | None = None
    version: int = STATE_VERSION
    wall_s: float = 0.0  # wall time of every invocation of the search, up to the last save
    _clock: float = field(default_factory=time.perf_counter, repr=False, compare=False)

    def save(self, sweep_dir: Path) -> None:
        now = time.perf_counter()
        self.wall_s, self._clock = round(self.wall_s + now - self._clock, 3), now
        write_json(Path(sweep_dir) / STATE_FILE, {k: v for k, v in asdict(self).items() if k != "_clock"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchState:
        rungs = [Rung(r["stage"], r["alive"], [Evaluation(**e) for e in r["evals"]], r.get("promoted"))
                 for r in d.get("rungs", [])]
        return cls(d["fingerprint"], d["trials"], rungs, d.get("next_job", 0), d.get("best"),
                   d.get("version", STATE_VERSION), d.get("wall_s", 0.0))


def fingerprint(trials: list[list[str]], options: dict[str, Any]) -> str:
    """Identity of a search: its trials and the options that change decisions."""
    blob = json.dumps({"trials": trials, "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_start(sweep_dir: Path, trials: list[list[str]], options: dict[str, Any]) -> tuple[SearchState, bool]:
    """(state, resumed). Refuses a state file of another search with one line."""
    fp = fingerprint(trials, options)
    path = Path(sweep_dir) / STATE_FILE
    if not path.is_file():
        return SearchState(fp, trials), False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FtlabError(f"{path}: unreadable search state ({err}); delete it to start the search over") from err
    if data.get("version") != STATE_VERSION or data.get("fingerprint") != fp:
        raise FtlabError(f"hydra.sweep.dir={str(sweep_dir)!r} is invalid: it holds {STATE_FILE} of another search "
                         f"(other trials or search options); use a new sweep dir or delete that file")
    return SearchState.from_dict(data), True


def harvest(sweep_dir: Path, evals: list[Evaluation], stage: int, metric: str) -> None:
    """Fill in the evaluations whose job has finished: its ``reuse_record.json`` (stage hits,
    runtimes; written after training) and ``metrics.json`` (written last) in a run dir under the
    sweep dir, matched by job number and overrides."""
    wanted = {e.job: e for e in evals if e.job is not None and not e.done}
    if not wanted:
        return
    for path in Path(sweep_dir).rglob(RECORD_FILE):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        e = wanted.get(rec.get("job_num"))
        metrics_file = path.parent / "metrics.json"
        if e is None or list(rec.get("overrides") or []) != e.overrides or not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text())
        if metric not in metrics:
            keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise FtlabError(f"hydra.sweeper.search.metric={metric!r} is invalid: not in {metrics_file} "
                             f"(numeric keys: {', '.join(keys)})")
        stages = rec.get("stages") or []
        executed = [s for s in stages if not s.get("cache_hit")]
        e.metric = float(metrics[metric])
        e.cache_hit = bool(stages[stage - 1]["cache_hit"]) if len(stages) >= stage else False
        e.executed_iters = int(sum(s["iters"] for s in executed))
        e.runtime_s = round(float(sum(s["runtime_s"] for s in executed)), 4)
        e.run_dir = str(path.parent)
