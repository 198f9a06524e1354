"""ftlab's per-step overhead over a bare PyTorch + peft loop, measured in one process.

Both sides train the same tiny model (widened so a step takes >= 20 ms on CPU) with the same
LoRA config, optimiser, schedule, clipping and batches. ftlab's side is the real recipe
(``ftlab.run.run``: Lightning Trainer, ftlab's module, callbacks writing loss_log.csv and
training_history.json), timed from the start of step ``warmup`` to the start of the last step, so
set-up and export are excluded on both sides. Runs alternate and the median ratio is printed.

    python benchmarks/overhead.py [--steps 60] [--repeats 3]    (target: ratio <= 1.10)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from peft import get_peft_model
from torch.utils.data import DataLoader

from ftlab.adapters.peft_lora import peft_config
from ftlab.config.compose import compose_run
from ftlab.data.datamodule import TaskDataModule
from ftlab.data.encoding import collate
from ftlab.models import build_model, build_tokenizer
from ftlab.run import run
from ftlab.training.schedules import lr_multiplier

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
    model = get_peft_model(build_model(cfg.model, tok, seed=cfg.seed), peft_config(cfg.adapter, cfg, use_dora=False))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    overrides = [*WIDE, "adapter=lora", f"train.max_steps={args.steps}", "train.batch_size=16",
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
