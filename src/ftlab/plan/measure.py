"""Measured peak tensor memory of a piece of work on the CPU, to check the planner's estimates.

A process's peak RSS holds the interpreter, the libraries and allocator slack, so it cannot
check an activation estimate of a few MB. ``torch.profiler`` with ``profile_memory=True`` records
every allocation and free of tensor memory per operator; walking the operator tree in time order
gives the live-bytes curve of the work and so its peak above the bytes live when it started —
the same quantity as CUDA's ``max_memory_allocated`` minus ``memory_allocated`` before a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile


def _peak_within(events: list[Any]) -> tuple[int, int]:
    """(net bytes, peak bytes above the start) of ``events`` run one after another; an event's own
    peak comes from its children (an op may allocate and free inside)."""
    cur = peak = 0
    for e in sorted(events, key=lambda e: e.time_range.start):
        children = list(e.cpu_children)
        if children:
            child_net, child_peak = _peak_within(children)
            own = e.cpu_memory_usage - child_net  # allocations of the op itself, outside its children
            peak = max(peak, cur + child_peak, cur + child_net + own)
        else:
            peak = max(peak, cur + e.cpu_memory_usage)
        cur += e.cpu_memory_usage
        peak = max(peak, cur)
    return cur, peak


def cpu_peak_bytes(work: Callable[[], Any]) -> int:
    """Peak bytes of CPU tensor memory ``work()`` holds at once above what was live before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    top = [e for e in prof.events() if e.cpu_parent is None]
    return _peak_within(top)[1]
