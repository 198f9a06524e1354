"""The stage tree of a sweep as text: trials merged where their step keys agree (Hippo's tree).

    Trial A ── Stage1: lr=1e-05, 50 iters (A1) [built by A; reused by B]
               ├── Stage2: lr=5e-05, 50 iters (A2) [built by A]
               └── Stage2: lr=3e-05, 50 iters (B2) [built by B]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    key: str
    text: str
    tag: str  # first trial that has it + its position, e.g. "A1"
    built_by: list[str] = field(default_factory=list)
    hit_by: list[str] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)

    def status(self) -> str:
        if self.built_by and self.hit_by:
            return f"built by {' '.join(self.built_by)}; reused by {' '.join(self.hit_by)}"
        if self.built_by:
            return f"built by {' '.join(self.built_by)}"
        return f"cached; used by {' '.join(self.hit_by)}"


def _chain(rec: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(key, text, position, hit) of each step of one trial, root first."""
    trial = rec["trial"]
    out = []
    if rec.get("base"):
        b = rec["base"]
        out.append((b["key"], f"Base: {b['steps']} steps", "base", b["cache_hit"]))
    if rec.get("mask"):
        m = rec["mask"]
        out.append((m["key"], "Mask", "mask", m["cache_hit"]))
    for st in rec.get("stages", []):
        key = st["key"] or f"uncached:{trial}:{st['stage_idx']}"  # not a cached step: private to the trial
        word = f"Stage{st['stage_idx']}" if st["key"] else "Train"
        out.append((key, f"{word}: lr={st['lr']:.6g}, {st['iters']} iters", str(st["stage_idx"]), st["cache_hit"]))
    return out


def build_tree(records: list[dict[str, Any]]) -> list[Node]:
    roots: list[Node] = []
    for rec in records:
        siblings, trial = roots, rec["trial"]
        for key, text, pos, hit in _chain(rec):
            node = next((n for n in siblings if n.key == key), None)
            if node is None:
                node = Node(key, text, f"{trial}{pos}" if pos.isdigit() else f"{trial}:{pos}")
                siblings.append(node)
            (node.hit_by if hit else node.built_by).append(trial)
            siblings = node.children
    return roots


def _lines(node: Node, prefix: str, out: list[str]) -> None:
    for i, child in enumerate(node.children):
        last = i == len(node.children) - 1
        out.append(f"{prefix}{'└── ' if last else '├── '}{child.text} ({child.tag}) [{child.status()}]")
        _lines(child, prefix + ("    " if last else "│   "), out)


def render_tree(roots: list[Node]) -> str:
    out: list[str] = []
    for root in roots:
        head = f"Trial {root.tag.rstrip('0123456789').split(':')[0]} ── "
        out.append(f"{head}{root.text} ({root.tag}) [{root.status()}]")
        _lines(root, " " * len(head), out)
    return "\n".join(out)
