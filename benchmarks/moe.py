"""The price of adapting MoE experts: masked-LoRA step time on tiny Mixtral with every expert
adapted against attention only, and the planner's memory for Mixtral-8x7B either way.

    python benchmarks/moe.py [--steps 10] [--rounds 5] [--warmup 3] [--threads 1] [--level 0.5]

Step time: one tiny Mixtral (``model=tiny_mixtral``) is pruned once (``sparsity=unstructured``,
magnitude, ``--level``); two masked-LoRA adapters are built on copies of that sparse base, one
with the default targets (attention + every expert's ``gate_up_proj``/``down_proj``, the new
behaviour) and one with ``adapter.target_modules=[q_proj,k_proj,v_proj,o_proj]`` (what ftlab
adapted before experts were first-class), and trained on the same fixed batch with AdamW. Timing is
interleaved (each round times ``--steps`` steps of both in turn) and the median over rounds is
reported, with the ratio experts / attention-only measured in the same run.

Memory: ``ftlab.adapters.params`` on ``model=mixtral_8x7b`` (built on the meta device, no weights):
trainable parameters and weights + AdamW state in bfloat16, experts adapted vs attention only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from ftlab.adapters.params import model_facts, static_memory_mb, trainable_params
from ftlab.adapters.registry import get_adapter
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.compose import compose_run
from ftlab.sparsity.pipeline import attach_masks, prepare_masks

ATTENTION = "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj]"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--level", type=float, default=0.5, help="sparsity of the base")
    return p.parse_args(argv)


class Variant:
    """Masked LoRA over a copy of the sparse base, with a fixed batch and AdamW."""

    def __init__(self, label: str, overrides: list[str], base, pruned, batch: dict):
        cfg = compose_run(["model=tiny_mixtral", "adapter=masked", "sparsity=unstructured",
                           "sparsity.importance=magnitude", *overrides])
        self.label = label
        self.adapted = attach_masks(get_adapter("masked").build(copy.deepcopy(base), cfg.adapter, cfg), pruned, cfg)
        self.adapted.model.train()
        self.opt = torch.optim.AdamW(self.adapted.param_groups(1e-3, 0.0)[0]["params"], lr=1e-3)
        self.batch = batch
        self.times: list[float] = []

    def step(self) -> None:
        self.adapted.model(**self.batch).loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def timed(self, steps: int) -> None:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.times.append((time.perf_counter() - start) / steps)


def step_times(args: argparse.Namespace) -> None:
    cfg = compose_run(["model=tiny_mixtral", "sparsity=unstructured", "sparsity.importance=magnitude",
                       f"sparsity.level={args.level}"])
    tok = build_tokenizer(cfg.model)
    base = build_model(cfg.model, tok, seed=0)
    pruned = prepare_masks(cfg, base, tok)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tok), (cfg.train.batch_size, 64), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    level = [f"sparsity.level={args.level}"]
    variants = [Variant("attention only", [*level, ATTENTION], base, pruned, batch),
                Variant("experts adapted", level, base, pruned, batch)]
    for v in variants:
        for _ in range(args.warmup):
            v.step()
    for _ in range(args.rounds):
        for v in variants:
            v.timed(args.steps)
    med = {v.label: statistics.median(v.times) for v in variants}
    for v in variants:
        print(f"tiny_mixtral masked LoRA, {v.label:16s}: trainable {v.adapted.trainable_params():>8,d}  "
              f"step {med[v.label] * 1000:8.1f} ms (median of {args.rounds} x {args.steps})")
    print(f"step time ratio experts / attention only: {med['experts adapted'] / med['attention only']:.2f}")


def planner_memory() -> None:
    rows = {}
    for label, extra in (("attention only (before)", [ATTENTION]), ("experts adapted (after)", [])):
        cfg = compose_run(["model=mixtral_8x7b", "adapter=lora", "model.dtype=bfloat16", *extra])
        facts = model_facts(cfg.model)
        trainable = trainable_params(facts, cfg)
        rows[label] = static_memory_mb(facts, trainable, "bfloat16")
        print(f"mixtral_8x7b LoRA r={cfg.adapter.r}, {label:24s}: trainable {trainable:>13,d} "
              f"({trainable / facts.total:.4%} of {facts.total:,d})  weights + AdamW state {rows[label] / 1024:7.2f} GiB")
    before, after = rows["attention only (before)"], rows["experts adapted (after)"]
    print(f"planner memory ratio after / before: {after / before:.4f} (+{(after - before) / 1024:.2f} GiB)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    planner_memory()
    step_times(args)


if __name__ == "__main__":
    main()
