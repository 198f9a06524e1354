"""Render a :class:`Plan` as Markdown (stdout, ``plan.md``) and as JSON (``plan.json``)."""

from __future__ import annotations

from typing import Any

from ftlab.data.packing import pack_length
from ftlab.plan.fused import fused_markdown, launcher_requested
from ftlab.plan.planner import PLAN_VERSION, Plan, PlannedRun, step_bytes
from ftlab.plan.search import markdown as search_markdown
from ftlab.plan.stages import StageTree

NOTES = (
    "Times cover optimiser steps (base pre-training, mask calibration, fine-tuning stages); model "
    "loading and evaluation are not included. Memory is per device: `fixed + per_sample x batch` "
    "(fit = two or more prior batch sizes, one-point = one prior batch size against the meta-device "
    "weights+optimiser state, analytic = no prior run: weights+optimiser state from the meta "
    "device plus an analytic activation estimate). Runs without a time basis are left out of the totals."
)

DISK_NOTE = (
    "A checkpoint and a cached stage hold the trainable-only state: each trainable value and its two "
    "AdamW moments (fp32 for adapters, the model dtype for full fine-tuning) plus ~64 KiB; the frozen "
    "weights are rebuilt from their steps. A cached base is the model's weights, a cached mask one byte "
    "per prunable weight.")

#: run names listed per stage-tree node
MAX_USERS = 6
#: runs whose steps the Markdown lists (plan.json has all)
MAX_STEP_RUNS = 8


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 1:
        return f"{s:.2f}s"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return "?"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def fmt_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _basis(run: PlannedRun) -> str:
    t = run.time
    if t.method == "none":
        return "**no basis**"
    return f"{t.method} ({len(t.basis)} run{'s' if len(t.basis) != 1 else ''})"


def _max_bs(run: PlannedRun) -> str:
    m = run.memory
    if m.max_batch_size is None:
        return "n/a (hardware.memory_gb unset)" if m.device_mb is None else "n/a"
    warn = " ⚠ batch too large" if m.fits is False else ""
    return f"{m.max_batch_size}{warn}"


def _steps(r) -> str:
    """Steps; with ``train.max_epochs`` also the epochs and steps per epoch (``24 = 2 ep × 12``)."""
    epochs = r.cfg.train.get("max_epochs")
    if epochs is None or r.control or not r.steps:
        return str(r.steps)
    return f"{r.steps} = {epochs} ep × {r.steps // int(epochs)}"


def run_table(plan: Plan) -> list[str]:
    head = ["#", "run", "model", "adapter", "task", "hardware", "batch", "steps", "params", "trainable",
            "est. time", "time basis", "peak mem", "max batch", "checkpoints", "cache"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in plan.runs:
        f = r.facts
        cells = [str(r.index), f"`{r.name}`" + (" (control)" if r.control else ""), f.model, f.adapter, f.task,
                 f"{f.hardware}×{f.devices}", str(f.batch_size), _steps(r), fmt_count(f.total_params),
                 fmt_count(r.trainable), fmt_seconds(r.seconds), _basis(r),
                 f"{fmt_mb(r.memory.peak_mb)} ({r.memory.method})", _max_bs(r),
                 f"{r.checkpoints} × {fmt_bytes(r.state_bytes)}" if r.checkpoints else "-", fmt_bytes(r.cache_bytes)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def steps_table(plan: Plan) -> list[str]:
    """Each run's plan of steps (the object the recipe executes): step, key, whether it goes
    through the reuse cache here, and the bytes its cache entry takes."""
    lines = ["| # | step | key | cached | artifact bytes |", "|---|---|---|---|---|"]  # '#': the run table's
    for r in plan.runs[:MAX_STEP_RUNS]:
        for label, step in r.step_plan.labelled():
            size = step_bytes(step, r)
            lines.append(f"| {r.index} | {label} | {short_key(step.key)} | {r.step_plan.cached_text(step)} "
                         f"| {fmt_bytes(size) if size is not None else '-'} |")
    if len(plan.runs) > MAX_STEP_RUNS:
        lines += ["", f"({len(plan.runs) - MAX_STEP_RUNS} more runs: every step of every run is in plan.json)"]
    return lines


def groups_table(plan: Plan) -> list[str]:
    """Each training run's AdamW groups: lr, parameters and the AdamW moments they hold (LoRA+
    puts the B matrices in their own group at ratio x lr)."""
    lines = ["| # | group | lr | parameters | AdamW state |", "|---|---|---|---|---|"]
    for r in plan.runs[:MAX_STEP_RUNS]:
        for g in r.groups:
            lines.append(f"| {r.index} | {g.name} | {g.lr:g} | {fmt_count(g.params)} | {fmt_bytes(g.state_bytes)} |")
    return lines


def short_key(key: str) -> str:
    """First 12 hex digits (+ the private-trial suffix); plan.json keeps the full key."""
    head, sep, tail = key.partition("~")
    return head[:12] + sep + tail


def tree_lines(tree: StageTree, names: list[str]) -> list[str]:
    out: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for node in tree.children(parent):
            users = tree.users(node.key)
            who = ", ".join(names[i] for i in users[:MAX_USERS])
            who += f", ... (+{len(users) - MAX_USERS} more)" if len(users) > MAX_USERS else ""
            out.append(f"{'  ' * depth}[{node.kind} {short_key(node.key)}] {node.label}: {node.iters} it "
                       f"x{len(users)} <- {who}")
            walk(node.key, depth + 1)

    walk(None, 0)
    return out


def to_markdown(plan: Plan) -> str:
    n_ctrl = sum(r.control for r in plan.runs)
    r, t = plan.reuse, plan.totals
    lines = [f"# ftlab plan: {len(plan.runs)} runs ({n_ctrl} eval-only)", "",
             f"Overrides: `{' '.join(plan.overrides) or '(none)'}`  ",
             f"Prior runs used as evidence: {len(plan.priors)} (searched: {', '.join(plan.options.prior_dirs)})", ""]
    lines += run_table(plan)
    lines += ["", "## Steps", "", "Each run's plan of steps (run # as in the table above): what `python -m ftlab` "
              "executes, and what its steps store in the reuse cache.", ""] + steps_table(plan)
    lines += ["", "## Optimiser groups", "", "AdamW parameter groups of each training run (LoRA+, "
              "`adapter.lora_plus_ratio`: the B matrices at ratio × lr in their own group).", ""] + groups_table(plan)
    lines += ["", "## Reuse (stage tree)", "",
              f"{r['trials']} trials; {r['nodes_naive']} stage runs without reuse, {r['nodes_planned']} after merging "
              f"identical histories. Base models: {r['base_models']} distinct, {r['shared_base_models']} shared.",
              f"Iterations: naive {r['naive_iters']}, planned {r['planned_iters']}, saved {r['saved_iters']} "
              f"({r['speedup']:.2f}x).", "", "```"]
    lines += tree_lines(plan.tree, [x.name for x in plan.runs])
    missing = ", ".join(f"`{n}`" for n in t["runs_without_basis"]) or "none"
    lines += ["```", ""]
    if plan.search is not None:
        lines += search_markdown(plan.search)
    if launcher_requested(plan.overrides):
        lines += fused_markdown(plan.runs, plan.overrides, plan.priors)
    lines += ["## Totals", ""]
    if len(t["runs_without_basis"]) == len(plan.runs):
        lines += ["No run has a time basis (no finished prior run on this hardware): device-hours unknown. "
                  "Run one job of the sweep (or the throughput benchmark) first, then plan again."]
    else:
        speed = f"{t['speedup']:.2f}x" if t["speedup"] else "n/a"
        lines += ["| | device-hours |", "|---|---|",
                  f"| without reuse | {t['device_hours_naive']:.4g} |",
                  f"| with reuse | {t['device_hours_planned']:.4g} |",
                  f"| saved | {t['device_hours_saved']:.4g} ({speed}) |"]
    lines += ["", f"Runs without a time basis (not in the totals): {missing}", "", "## Disk", "",
              "| | bytes |", "|---|---|",
              f"| checkpoints (every run dir) | {fmt_bytes(t['checkpoint_bytes'])} |",
              f"| reuse cache (each shared entry once) | {fmt_bytes(t['cache_bytes'])} |",
              f"| reuse cache were nothing shared | {fmt_bytes(t['cache_bytes_unshared'])} |",
              "", DISK_NOTE, "", "## Estimate bases", ""]
    for run in plan.runs:
        tm, mm = run.time, run.memory
        where = "; ".join(tm.basis) or "-"
        lines.append(f"- `{run.name}`: time {tm.method}: {tm.note}. Prior runs: {where}")
        mem_where = "; ".join(mm.basis) or "meta-device parameters + analytic activations"
        fit = "" if mm.fits is None else (f"; at batch {run.facts.batch_size} it {'fits' if mm.fits else 'does NOT fit'}"
                                           f" in {mm.safety_factor:g} x {fmt_mb(mm.device_mb)} per device")
        shard = f"; {mm.sharding}" if mm.sharding else ""
        unit = f"row of {pack_length(run.cfg.train, run.cfg.task)} tokens" if run.cfg.train.packing else "sample"
        lines.append(f"  memory {mm.method}: {fmt_mb(mm.fixed_mb)} + {mm.per_sample_mb:.3g} MiB/{unit} "
                     f"({mem_where}{shard}){fit}")
    lines += ["", "## Notes", "", NOTES, ""]
    return "\n".join(lines)


def to_json(plan: Plan, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    names = [r.name for r in plan.runs]
    runs = []
    for r in plan.runs:
        f, tm, mm = r.facts, r.time, r.memory
        runs.append({
            "index": r.index, "name": r.name, "control": r.control, "overrides": r.overrides,
            "model": f.model, "adapter": f.adapter, "task": f.task, "hardware": f.hardware, "devices": f.devices,
            "batch_size": f.batch_size, "steps": r.steps, "total_params": f.total_params,
            "trainable_params": r.trainable,
            "time": {"seconds": r.seconds, "sec_per_step": tm.sec_per_step, "method": tm.method,
                     "has_basis": tm.has_basis, "basis": tm.basis, "note": tm.note},
            "memory": {"peak_mb": mm.peak_mb, "fixed_mb": mm.fixed_mb, "per_sample_mb": mm.per_sample_mb,
                       "method": mm.method, "basis": mm.basis, "device_mb": mm.device_mb,
                       "safety_factor": mm.safety_factor, "max_batch_size": mm.max_batch_size, "fits": mm.fits},
            "stages": r.chain,
            "step_plan": [{"step": label, "kind": st.kind, "key": st.key, "parent": st.parent, "cached": st.cached,
                       "artifact_bytes": step_bytes(st, r)} for label, st in r.step_plan.labelled()],
            "optimizer_groups": [{"name": g.name, "lr": g.lr, "params": g.params, "state_bytes": g.state_bytes}
                                 for g in r.groups],
            "disk": {"state_bytes": r.state_bytes, "checkpoints": r.checkpoints,
                     "checkpoint_bytes": r.checkpoint_bytes, "cache_bytes": r.cache_bytes},
            **((extra or {}).get(r.name, {})),
        })
    nodes = [{"key": n.key, "kind": n.kind, "label": n.label, "iters": n.iters, "parent": n.parent,
              "devices": n.devices, "runs": [names[i] for i in plan.tree.users(n.key)]}
             for n in plan.tree.nodes.values()]
    reuse = {k: v for k, v in plan.reuse.items() if k != "base_users"}
    return {"version": PLAN_VERSION, "created": plan.created, "overrides": plan.overrides,
            "prior_runs": [p.path for p in plan.priors], "runs": runs, "stage_tree": nodes, "reuse": reuse,
            "totals": plan.totals, **({"search": plan.search} if plan.search is not None else {})}
