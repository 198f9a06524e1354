"""Compute reuse, measured: each sweep with reuse against the same sweep with ``reuse.enabled=false``,
both run in this invocation on this machine, plus a re-run of the finished sweep.

    python benchmarks/reuse.py [--threads 1] [--rounds 2] [--only stage,branches,base] [--out DIR] [--json FILE]

Scenarios (each one ``python -m ftlab ... --multirun`` per variant, fresh cache dirs; wall time
of the whole command, so interpreter start, composition and evaluation count on both sides):

1. ``stage``    stage_reuse_demo (stage 1: 50 iters at 1e-5; stage 2: 50 at 5e-5 or 3e-5).
                Target: 150 executed vs 200 naive iterations, wall <= 0.85 x without reuse.
2. ``branches`` one warm-up stage + 5 branches (stage_reuse_demo over 5 stage-2 lrs).
                Target: 6 stage runs instead of 10, wall <= 0.70 x without reuse.
3. ``base``     base_reuse_demo: one base model, 5 fine-tuning settings. Target: the base is
                trained once; the wall-time ratio is reported.

Each scenario runs ``--rounds`` pairs (naive sweep, then the reuse sweep into a fresh cache) and
compares the fastest wall time of each variant: the machine may be shared, and the fastest run is
the least disturbed one. Then the finished reuse sweep is run again: every cached step must be a
hit and no training step may run (``executed_iters == 0``). Iteration counts come from the
sweeps' own ``reuse_summary.json``.

Bytes: what the reuse sweep wrote into its fresh cache (every entry's files, by step kind), and
how much of that the trainable-only stage states save against the previous format, whose
stage entries also held every frozen weight (estimated from the entries' own records: the
frozen parameters x 4 bytes of the fp32 tiny models).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCENARIOS = {
    "stage": {"overrides": ["+experiment=stage_reuse_demo"], "target": 0.85,
              "want": {"naive_iters": 200, "executed_iters": 150}},
    "branches": {"overrides": ["+experiment=stage_reuse_demo", "schedule.stages.1.lr=1e-5,2e-5,3e-5,4e-5,5e-5"],
                 "target": 0.70, "want": {"stage_runs": (10, 6)}},
    "base": {"overrides": ["+experiment=base_reuse_demo"], "target": None,
             "want": {"base_built": 1, "stage_runs": (5, 5)}},
}


def sweep(overrides: list[str], out: Path, cache: Path, threads: int | None, *extra: str) -> tuple[float, dict]:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "ftlab", "--multirun", *overrides, f"hydra.sweep.dir={out}",
           f"paths.cache_dir={cache}", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    return wall, json.loads((out / "reuse_summary.json").read_text())


def cache_bytes(cache: Path) -> dict[str, int]:
    """Bytes of the cache's published entries by step kind, and what the stage entries would
    have added with every frozen weight in them (``frozen_bytes_avoided``)."""
    out: dict[str, int] = {}
    for entry in sorted((cache / "entries").iterdir()) if (cache / "entries").is_dir() else []:
        kind = json.loads((entry / "config.json").read_text())["kind"]
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        out[kind] = out.get(kind, 0) + size
        meta = entry / "artifact" / "meta.json"
        if kind == "stage" and meta.is_file():
            info = json.loads(meta.read_text()).get("ftlab_state") or {}
            frozen = info.get("frozen_params")
            if frozen is not None:
                out["frozen_bytes_avoided"] = out.get("frozen_bytes_avoided", 0) + 4 * int(frozen)
    out["total"] = sum(v for k, v in out.items() if k != "frozen_bytes_avoided")
    return out


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def run_scenario(name: str, spec: dict, root: Path, threads: int | None, rounds: int) -> dict:
    """``rounds`` x (naive sweep, reuse sweep into a fresh cache), alternating; the ratio is of the
    fastest of each (the least disturbed by other load on the machine). Then the re-run."""
    over = spec["overrides"]
    naive_walls, reuse_walls = [], []
    for r in range(rounds):
        wall, naive = sweep(over, root / f"{name}-naive{r}", root / f"{name}-cache-naive{r}", threads,
                            "reuse.enabled=false")
        naive_walls.append(wall)
        wall, reuse = sweep(over, root / f"{name}-reuse{r}", root / f"{name}-cache{r}", threads)
        reuse_walls.append(wall)
    written = cache_bytes(root / f"{name}-cache{rounds - 1}")  # before the re-run (which writes nothing new)
    again_wall, again = sweep(over, root / f"{name}-again", root / f"{name}-cache{rounds - 1}", threads)
    checks_bytes = cache_bytes(root / f"{name}-cache{rounds - 1}")["total"] == written["total"]
    naive_wall, reuse_wall = min(naive_walls), min(reuse_walls)
    ratio = reuse_wall / naive_wall
    checks = {
        "rerun_writes_nothing": checks_bytes,
        "rerun_all_hits": again["executed_iters"] == 0 and again["stages"]["executed_runs"] == 0
        and again["base"]["built"] == 0,
    }
    want = spec["want"]
    if "naive_iters" in want:
        checks["iterations"] = (reuse["naive_iters"], reuse["executed_iters"]) == (want["naive_iters"],
                                                                                  want["executed_iters"])
    if "stage_runs" in want:
        checks["stage_runs"] = (reuse["stages"]["naive_runs"], reuse["stages"]["executed_runs"]) == want["stage_runs"]
    if "base_built" in want:
        checks["base_built_once"] = reuse["base"]["built"] == 1 and naive["base"]["built"] == naive["base"]["trials"]
    if spec["target"] is not None:
        checks[f"wall_ratio<={spec['target']}"] = ratio <= spec["target"]
    return {
        "scenario": name, "trials": reuse["trials"],
        "naive_wall_s": round(naive_wall, 2), "reuse_wall_s": round(reuse_wall, 2), "rerun_wall_s": round(again_wall, 2),
        "naive_walls": [round(w, 2) for w in naive_walls], "reuse_walls": [round(w, 2) for w in reuse_walls],
        "wall_ratio": round(ratio, 3), "rerun_ratio": round(again_wall / naive_wall, 3),
        "naive_iters": reuse["naive_iters"], "executed_iters": reuse["executed_iters"],
        "stage_runs": f"{reuse['stages']['executed_runs']}/{reuse['stages']['naive_runs']}",
        "base_builds": f"{reuse['base']['built']}/{reuse['base']['trials']}",
        "rerun_executed_iters": again["executed_iters"], "cache_bytes": written, "checks": checks, "ok": all(checks.values()),
        "tree": reuse["tree"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of every sweep (default: inherited)")
    p.add_argument("--rounds", type=int, default=2, help="naive/reuse sweep pairs per scenario (fastest counts)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    p.add_argument("--out", type=Path, default=None, help="keep the sweep dirs here (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"ftlab: error: --only={','.join(unknown)!r} is invalid: one of {list(SCENARIOS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ftlab-reuse-bench-") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        results = []
        for name in names:
            r = run_scenario(name, SCENARIOS[name], root, args.threads, max(1, args.rounds))
            results.append(r)
            print(f"\n== {name}: {r['trials']} trials")
            print("\n".join(r["tree"]))
            print(f"   wall (fastest of {args.rounds}): naive {r['naive_wall_s']}s {r['naive_walls']}, reuse "
                  f"{r['reuse_wall_s']}s {r['reuse_walls']} -> ratio {r['wall_ratio']}; re-run {r['rerun_wall_s']}s "
                  f"(ratio {r['rerun_ratio']})")
            print(f"   iterations: {r['executed_iters']} executed / {r['naive_iters']} naive; stage runs "
                  f"{r['stage_runs']}; base builds {r['base_builds']}; re-run executed {r['rerun_executed_iters']}")
            cb = r["cache_bytes"]
            kinds = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in cb.items() if k not in ("total", "frozen_bytes_avoided"))
            avoided = cb.get("frozen_bytes_avoided", 0)
            print(f"   cache written: {fmt_bytes(cb['total'])} ({kinds or 'nothing'}); the previous format's stage entries "
                  f"would have added {fmt_bytes(avoided)} of frozen weights"
                  + (f" (x{(cb['total'] + avoided) / cb['total']:.1f})" if cb["total"] else ""))
            print("   " + ", ".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in r["checks"].items()))
    print("\nscenario   naive_s  reuse_s  ratio  rerun_s  executed/naive   cache  ok")
    for r in results:
        print(f"{r['scenario']:<10} {r['naive_wall_s']:>7} {r['reuse_wall_s']:>8} {r['wall_ratio']:>6} "
              f"{r['rerun_wall_s']:>8} {r['executed_iters']:>7}/{r['naive_iters']:<7} "
              f"{fmt_bytes(r['cache_bytes']['total']):>8}  {r['ok']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
