"""Peak training memory with and without gradient checkpointing, one fresh process per setting.

    python benchmarks/memory.py [--batch 8] [--seq 512] [--steps 2] [--device cpu|cuda]
                                [--settings plain,ckpt] [OVERRIDES...]

The model is the tiny Llama widened until activations dominate (hidden 256, 8 layers, sequences
of 512 tokens: ~6 M weights against ~2 GB of activations per step); any ``compose_run``
override replaces those defaults (``model=tiny_gpt_neox``, ``adapter=dora``,
``model.dtype=bfloat16``, ``model.quantization=nf4``...). Each setting runs in its own
subprocess — a process's peak resident set only grows, so settings cannot share one — which
builds the model exactly as ``ftlab.recipe.run`` does (``prepare_for_training``, the adapter, fp32
trainables) and takes ``--steps`` AdamW steps on random tokens.

Peak memory is CUDA's ``max_memory_allocated`` on a GPU, else the process's peak RSS
(``ru_maxrss``), which includes the interpreter and libraries; the RSS before the first step is
printed too, and ``activation`` = peak minus that. The ratio checkpointing / plain is printed
for both (issue 11's target: peak <= 0.7 x without checkpointing), next to the planner's
analytic activation estimate for the same shape. On the CPU, RSS also holds allocator slack, so
one more step is measured exactly (``tensor act.``: peak tensor bytes of a step above those live
before it, from torch.profiler's allocation records, ``ftlab.plan.measure``) and compared with
the planner (``act/plan``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

TARGET = 0.7
WIDE = ["model=tiny_llama", "model.config.hidden_size=256", "model.config.intermediate_size=1024",
        "model.config.num_hidden_layers=8", "model.config.max_position_embeddings=1024", "adapter=lora"]
SETTINGS = {"plain": ["train.gradient_checkpointing=false"], "ckpt": ["train.gradient_checkpointing=true"]}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=2, help="optimiser steps per setting (the peak is reached in step 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--settings", default="plain,ckpt", help=f"comma list of {sorted(SETTINGS)}")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, overrides = p.parse_known_args(argv)
    for key in ("batch", "seq", "steps"):
        if getattr(args, key) < 1:
            p.error(f"--{key}={getattr(args, key)}: an integer >= 1")
    args.settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        p.error(f"--settings: {unknown} not in {sorted(SETTINGS)}")
    return args, [*WIDE, *overrides]


def peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(setting: str, args: argparse.Namespace, overrides: list[str]) -> dict:
    """One setting, in this (fresh) process."""
    import torch

    from ftlab.adapters.registry import get_adapter
    from ftlab.models import build_model, build_tokenizer
    from ftlab.models.memory import prepare_for_training, upcast_trainable_
    from ftlab.preflight.compose import compose_run

    torch.manual_seed(0)
    cfg = compose_run([*overrides, *SETTINGS[setting]])
    model = build_model(cfg.model, build_tokenizer(cfg.model), seed=0)
    model = prepare_for_training(model, cfg)
    adapted = get_adapter(cfg.adapter.name).build(model, cfg.adapter, cfg)
    upcast_trainable_(adapted.model)
    net = adapted.model.to(args.device).train()
    opt = torch.optim.AdamW(adapted.param_groups(1e-4, 0.0), lr=1e-4)
    vocab = net.config.vocab_size
    ids = torch.randint(3, vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = peak_mb(args.device) if args.device != "cuda" else torch.cuda.memory_allocated() / 2**20
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = net(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step_s = (time.perf_counter() - t0) / args.steps
    peak = peak_mb(args.device)
    tensor_mb = None
    if args.device == "cpu":
        from ftlab.plan.measure import cpu_peak_bytes

        def step() -> None:
            net(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
            opt.zero_grad(set_to_none=True)

        tensor_mb = cpu_peak_bytes(step) / 2**20
    return {"setting": setting, "peak_mb": peak, "before_mb": before, "step_s": step_s, "tensor_mb": tensor_mb,
            "loss": float(loss), "params": sum(p.numel() for p in net.parameters())}


def analytic(overrides: list[str], seq: int, batch: int) -> dict[str, float]:
    """The planner's activation estimate for both settings (MiB per step)."""
    from ftlab.adapters.params import activation_mb_per_sample, model_facts
    from ftlab.preflight.compose import compose_run

    cfg = compose_run(overrides)
    facts = model_facts(cfg.model)
    dtype = str(cfg.model.dtype)
    return {s: batch * activation_mb_per_sample(facts, seq, dtype, checkpointing=(s == "ckpt")) for s in SETTINGS}


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args, overrides)))
        return 0
    rows = []
    for setting in args.settings:
        cmd = [sys.executable, __file__, "--child", setting, "--batch", str(args.batch), "--seq", str(args.seq),
               "--steps", str(args.steps), "--device", args.device, *overrides[len(WIDE):]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{setting}: failed\n{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    est = analytic(overrides, args.seq, args.batch)
    unit = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS"
    print(f"model: {' '.join(overrides)}  batch {args.batch} x seq {args.seq}, {args.steps} steps, {unit}")
    print(f"{'setting':8s} {'peak MiB':>9s} {'before':>8s} {'activation':>10s} {'planner act.':>12s} {'s/step':>7s}"
          f" {'tensor act.':>11s} {'act/plan':>8s}")
    for r in rows:
        r["activation_mb"] = r["peak_mb"] - r["before_mb"]
        exact = "" if r["tensor_mb"] is None else f" {r['tensor_mb']:11.0f} {r['tensor_mb'] / est[r['setting']]:8.3f}"
        print(f"{r['setting']:8s} {r['peak_mb']:9.0f} {r['before_mb']:8.0f} {r['activation_mb']:10.0f} "
              f"{est[r['setting']]:12.0f} {r['step_s']:7.2f}{exact}")
    by = {r["setting"]: r for r in rows}
    if {"plain", "ckpt"} <= by.keys():
        ratio = by["ckpt"]["peak_mb"] / by["plain"]["peak_mb"]
        act = by["ckpt"]["activation_mb"] / max(by["plain"]["activation_mb"], 1e-9)
        slow = by["ckpt"]["step_s"] / by["plain"]["step_s"]
        verdict = "ok" if ratio <= TARGET else "over"
        print(f"peak ckpt/plain = {ratio:.3f} (target <= {TARGET}: {verdict}); activation ckpt/plain = {act:.3f}; "
              f"step time ckpt/plain = {slow:.2f}; same loss: {abs(by['ckpt']['loss'] - by['plain']['loss']) < 1e-4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
