"""ftlab's overhead over a bare PyTorch + peft loop: per step (one process) and end to end.

Both sides train the same tiny model (widened so a step takes >= 20 ms on CPU) with the same
LoRA config, optimiser, schedule, clipping and batches. ftlab's side is the real recipe
(``ftlab.recipe.run.run``: Lightning Trainer, ftlab's module, callbacks writing loss_log.csv and
training_history.json), timed from the start of step ``warmup`` to the start of the last step, so
set-up and export are excluded on both sides. Runs alternate and the median ratio is printed.

    python benchmarks/overhead.py [--steps 60] [--repeats 3]    (target: ratio <= 1.10)

End to end (``--e2e-repeats``, 0 skips it): wall time of a 200-step LoRA run through
``python -m ftlab`` with ``train.packing=true`` (``--rows`` rows of ``train.pack_length`` tokens per
step), process start to exit, vs ``benchmarks/bare_peft.py`` (a separate process importing only
torch, transformers and peft) training on the same examples in the same order, ``--bare-batch``
per step padded to each batch's longest. Both tokenize their data, neither evaluates or exports.
Runs alternate; the median ratio is printed (target: <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader

from ftlab.data.datamodule import ResumableSampler, TaskDataModule
from ftlab.data.encoding import collate
from ftlab.models import build_model, build_tokenizer
from ftlab.models.build import model_config
from ftlab.preflight.compose import compose_run
from ftlab.recipe.run import run
from ftlab.training.schedules import lr_multiplier

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# explicit targets: both sides adapt the same layers whatever the model's default list is
LORA = ["adapter=lora", f"adapter.target_modules=[{','.join(LINEARS)}]"]
WIDE = ["model.config.hidden_size=256", "model.config.intermediate_size=768", "model.config.num_hidden_layers=4",
        "model.config.num_attention_heads=8", "model.config.num_key_value_heads=4"]


class StepClock(L.Callback):
    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())


def ftlab_step_time(overrides: list[str], warmup: int) -> float:
    cfg = compose_run(overrides)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, run_dir=Path(tmp), extra_callbacks=[clock])
    s = clock.starts
    return (s[-1] - s[warmup]) / (len(s) - 1 - warmup)


def bare_step_time(overrides: list[str], warmup: int) -> float:
    cfg = compose_run(overrides)
    L.seed_everything(cfg.seed, verbose=False)
    tok = build_tokenizer(cfg.model)
    a = cfg.adapter
    lora = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=list(a.target_modules),
                      task_type="CAUSAL_LM")
    model = get_peft_model(build_model(cfg.model, tok, seed=cfg.seed), lora)
    model.train()
    dm = TaskDataModule(cfg, tok)
    dm.setup()
    loader = DataLoader(dm.train_data, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                        collate_fn=partial(collate, pad_id=tok.pad_token_id))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.schedule.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(cfg.schedule, cfg.train.max_steps))
    starts, step = [], 0
    while step < cfg.train.max_steps:
        for batch in loader:
            if step == cfg.train.max_steps:
                break
            starts.append(time.perf_counter())
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.gradient_clip_val)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
    return (starts[-1] - starts[warmup]) / (len(starts) - 1 - warmup)


def packed_examples(cfg) -> list:
    """The (prompt, answer) examples a packed ftlab run trains on, in its order: the datamodule's
    rows, taken epoch by epoch in the order of the run's sampler, ``batch_size`` rows a step."""
    dm = TaskDataModule(cfg, build_tokenizer(cfg.model))
    dm.setup()
    index = {id(e): i for i, e in enumerate(dm.train_data)}
    rows, per_step = dm.train_items, cfg.train.batch_size
    order: list[int] = []
    epoch = 0
    while len(order) < cfg.train.max_steps * per_step:
        sampler = ResumableSampler(len(rows), cfg.seed)
        sampler.set_epoch(epoch)
        epoch_rows = list(sampler)
        order += epoch_rows[:len(epoch_rows) - len(epoch_rows) % per_step]  # drop_last
        epoch += 1
    train = dm.splits.train
    return [train[index[id(e)]] for r in order[:cfg.train.max_steps * per_step] for e in rows[r]]


def bare_spec(cfg, examples: list, batch_size: int) -> dict:
    tok = build_tokenizer(cfg.model)
    a, t = cfg.adapter, cfg.train
    return {
        "seed": cfg.seed, "max_length": cfg.task.max_length, "batch_size": batch_size,
        "log_every": t.log_every_n_steps, "model_config": model_config(cfg.model, tok).to_dict(),
        "lora": {"r": a.r, "alpha": a.alpha, "dropout": a.dropout, "target_modules": list(a.target_modules)},
        "optim": {"lr": cfg.schedule.lr, "betas": list(t.betas), "eps": t.eps, "weight_decay": t.weight_decay,
                  "clip": t.gradient_clip_val},
        "examples": [[e.prompt, e.answer] for e in examples],
    }


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}): {tail}")
    return wall


def end_to_end(args: argparse.Namespace) -> None:
    overrides = [*WIDE, *LORA, f"train.max_steps={args.e2e_steps}", "train.packing=true",
                 f"train.batch_size={args.rows}", "train.log_every_n_steps=10", "eval.enabled=false",
                 "train.save_epoch_checkpoints=false", "train.save_adapter=false", "train.save_merged_model=false",
                 "train.deterministic=false"]
    cfg = compose_run(overrides)
    examples = packed_examples(cfg)
    bare_steps = len(examples) // args.bare_batch
    print(f"end to end: ftlab {args.e2e_steps} packed steps of {args.rows} rows x {cfg.train.pack_length or 'default'}"
          f" tokens = {len(examples)} examples; bare: {bare_steps} steps of {args.bare_batch} padded examples")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(bare_spec(cfg, examples, args.bare_batch)))
        bare_cmd = [sys.executable, str(Path(__file__).with_name("bare_peft.py")), str(spec)]
        timed(bare_cmd)  # untimed: warms the page cache of both sides' imports
        for i in range(args.e2e_repeats):
            run_dir = Path(tmp) / f"ftlab{i}"
            bare = timed(bare_cmd)
            ours = timed([sys.executable, "-m", "ftlab", *overrides, f"hydra.run.dir={run_dir}"])
            m = json.loads((run_dir / "metrics.json").read_text())
            ratios.append(ours / bare)
            print(f"repeat {i}: bare {bare:.1f} s, ftlab (packed) {ours:.1f} s (fit {m['train_time_s']:.1f} s, "
                  f"padding_fraction {m['padding_fraction']:.3f}), ratio {ours / bare:.3f}", flush=True)
    print(f"median end-to-end ftlab(packed)/bare wall-time ratio: {statistics.median(ratios):.3f} (target <= 1.0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="per-step comparison rounds (0 skips it)")
    ap.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end rounds (0 skips them)")
    ap.add_argument("--e2e-steps", type=int, default=200)
    ap.add_argument("--rows", type=int, default=3, help="packed rows per ftlab step")
    ap.add_argument("--bare-batch", type=int, default=16, help="examples per bare step")
    args = ap.parse_args()
    if args.e2e_repeats:
        end_to_end(args)
    if not args.repeats:
        return
    overrides = [*WIDE, *LORA, f"train.max_steps={args.steps}", "train.batch_size=16",
                 "task.num_examples=4000", "train.log_every_n_steps=10", "eval.enabled=false",
                 "train.save_epoch_checkpoints=false", "train.save_adapter=false", "train.save_merged_model=false",
                 "train.deterministic=false"]
    ratios = []
    bare_step_time(overrides, args.warmup)  # untimed round: thread pools, allocator, imports warm up
    for i in range(args.repeats):
        bare = bare_step_time(overrides, args.warmup)
        ours = ftlab_step_time(overrides, args.warmup)
        ratios.append(ours / bare)
        print(f"repeat {i}: bare {bare * 1e3:.1f} ms/step, ftlab {ours * 1e3:.1f} ms/step, ratio {ours / bare:.3f}")
    print(f"median ftlab/bare per-step time ratio: {statistics.median(ratios):.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
