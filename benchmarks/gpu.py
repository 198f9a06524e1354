"""ftlab's training step vs a bare PyTorch + peft loop on a Qwen2.5-0.5B-shaped model, one process.

Both sides train the same randomly initialised model (``model=qwen2_5_0_5b``, bf16 base, LoRA
r=16 on all seven linear kinds) on the same pre-collated batches, with the same AdamW, schedule,
clipping and autocast. ftlab's side is its real step: ``FtlabModule`` under the Lightning Trainer
of ``build_trainer`` with the ``loss_log.csv`` and history callbacks; the bare side reads its loss
on the host every ``log_every_n_steps`` like ftlab does. Timing runs from the start of step
``--warmup`` to the end of the last step, the device synchronised at both ends.

Rows (ratios measured in this run):

1. fixed-length batches (``batch x seq_len`` tokens): tokens/s ftlab / bare (target >= 0.97);
2. packing: examples of random lengths (``seq_len/16 .. seq_len``) padded to each batch's longest
   vs packed into rows of ``seq_len`` (``train.packing``, ``train.pack_length=seq_len``): real
   (non-pad) tokens/s and padding;
3. gradient checkpointing (``train.gradient_checkpointing``): tokens/s and peak memory vs without;
4. ``[mem]`` per variant (plain, packing, gradient checkpointing): measured peak memory / ``python
   -m ftlab.plan``'s estimate for the same config (target 0.85-1.15). On CUDA the measurement is
   ``max_memory_allocated`` of ftlab's run; on the CPU it is the same quantity taken by hand:
   bytes of the weights and optimiser state plus the peak tensor memory of one training step
   (``ftlab.plan.measure.cpu_peak_bytes``), since the process RSS holds the whole runtime.

    python benchmarks/gpu.py [--small] [--steps 30] [--batch-size 8] [--seq-len 512]

Without CUDA it runs a small shape on the CPU (``--small`` is implied): the numbers then only
show that every row works.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader

from ftlab.adapters.registry import get_adapter
from ftlab.callbacks.history import TrainingHistory
from ftlab.callbacks.loss_log import LossLog
from ftlab.data.encoding import IGNORE_INDEX, Encoded, collate
from ftlab.data.packing import collate_packed, model_inputs, pack_rows
from ftlab.models import build_model
from ftlab.plan.measure import cpu_peak_bytes
from ftlab.plan.options import PlanOptions
from ftlab.plan.planner import make_plan
from ftlab.preflight.compose import compose_run
from ftlab.training.module import FtlabModule
from ftlab.training.schedules import lr_multiplier
from ftlab.training.trainer import build_trainer

ALL_LINEARS = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
SMALL = ["model.config.vocab_size=1024", "model.config.hidden_size=64", "model.config.intermediate_size=128",
         "model.config.num_hidden_layers=2", "model.config.num_attention_heads=4",
         "model.config.num_key_value_heads=2"]


@dataclass
class Result:
    seconds: float
    tokens: int  # real (non-pad) tokens of the timed steps
    slots: int  # token slots (rows x width) of the timed steps
    peak_mb: float

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds


def overrides(args: argparse.Namespace, cuda: bool, *extra: str) -> list[str]:
    return ["model=qwen2_5_0_5b", "adapter=lora", "adapter.r=16", "adapter.alpha=32",
            f"adapter.target_modules={ALL_LINEARS}", f"hardware={'gpu' if cuda else 'cpu'}",
            f"task.max_length={args.seq_len}", f"train.batch_size={args.batch_size}",
            f"train.max_steps={args.steps}", "train.log_every_n_steps=10", "train.deterministic=false",
            *(SMALL if args.small else []), *extra]


# -- batches ------------------------------------------------------------------------------
def example(rng: random.Random, length: int, vocab: int) -> Encoded:
    """Random tokens; the first half is the prompt (no loss), the rest the answer."""
    ids = [rng.randrange(3, vocab) for _ in range(length)]
    cut = length // 2
    return Encoded(ids, [IGNORE_INDEX] * cut + ids[cut:])


def fixed_batches(args, vocab: int, n: int) -> list[dict]:
    rng = random.Random(0)
    return [collate([example(rng, args.seq_len, vocab) for _ in range(args.batch_size)], 0) for _ in range(n)]


def varlen_examples(args, vocab: int, n: int) -> list[Encoded]:
    rng = random.Random(1)
    return [example(rng, rng.randint(max(2, args.seq_len // 16), args.seq_len), vocab) for _ in range(n)]


def padded_batches(args, examples: list[Encoded]) -> list[dict]:
    bs = args.batch_size
    return [collate(examples[i:i + bs], 0) for i in range(0, len(examples) - bs + 1, bs)]


def packed_batches(args, examples: list[Encoded]) -> list[dict]:
    rows = [[examples[i] for i in row] for row in pack_rows([len(e.input_ids) for e in examples], args.seq_len)]
    random.Random(2).shuffle(rows)
    bs = args.batch_size
    return [collate_packed(rows[i:i + bs], args.seq_len, 0) for i in range(0, len(rows) - bs + 1, bs)]


def counted(batches: list[dict], warmup: int) -> tuple[int, int]:
    timed = batches[warmup:]
    return (sum(int(b["attention_mask"].sum()) for b in timed), sum(b["attention_mask"].numel() for b in timed))


# -- measurement helpers -------------------------------------------------------------------
def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_model(cfg):
    """The random-init base (same seed on both sides), prepared like ftlab's recipe prepares it
    (gradient checkpointing where this ftlab has ``ftlab.models.memory``)."""
    # the preset's architecture with random weights: no name_or_path to load from (nothing is downloaded)
    model = build_model(OmegaConf.merge(cfg.model, {"name_or_path": None}), None, seed=0)
    try:
        from ftlab.models.memory import prepare_for_training
    except ImportError:  # an ftlab without the memory features: nothing to prepare
        if cfg.train.get("gradient_checkpointing"):
            raise SystemExit("train.gradient_checkpointing is set but ftlab.models.memory is missing") from None
        return model
    return prepare_for_training(model, cfg)


class Clock(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1 = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync()
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        sync()
        self.t1 = time.perf_counter()


def ftlab_run(cfg, batches: list[dict], warmup: int) -> Result:
    reset_memory()
    adapted = get_adapter(cfg.adapter.name).build(base_model(cfg), cfg.adapter, cfg)
    module = FtlabModule(adapted, cfg)
    clock = Clock(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [LossLog(Path(tmp), cfg.train.log_every_n_steps, cfg.train.log_measurements),
                     TrainingHistory(Path(tmp)), clock]
        trainer = build_trainer(cfg, max_steps=len(batches), callbacks=callbacks, validate=False)
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    tokens, slots = counted(batches, warmup)
    result = Result(clock.t1 - clock.t0, tokens, slots, peak_mb())
    del trainer, module, adapted
    return result


def bare_run(cfg, batches: list[dict], warmup: int) -> Result:
    reset_memory()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = cfg.adapter  # the bare side's own peft config, with the keys ftlab's run uses
    lora = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=list(a.target_modules),
                      task_type="CAUSAL_LM")
    model = get_peft_model(base_model(cfg), lora).to(device)
    model.train()
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.schedule.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(cfg.schedule, len(batches)))
    mixed = "mixed" in str(cfg.hardware.precision)
    dtype = torch.bfloat16 if "bf16" in str(cfg.hardware.precision) else torch.float16
    impl = model.config._attn_implementation
    t0 = 0.0
    for step, cpu_batch in enumerate(batches):
        if step == warmup:
            sync()
            t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in cpu_batch.items()}
        with torch.autocast(device.type, dtype=dtype) if mixed else nullcontext():
            loss = model(**model_inputs(batch, impl)).loss
        loss.backward()
        if t.gradient_clip_val is not None:
            torch.nn.utils.clip_grad_norm_(params, t.gradient_clip_val)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % t.log_every_n_steps == 0:
            loss.item()  # what a bare loop logs
    sync()
    seconds = time.perf_counter() - t0
    tokens, slots = counted(batches, warmup)
    result = Result(seconds, tokens, slots, peak_mb())
    del model, opt
    return result


def plan_estimate_mb(ov: list[str]) -> float:
    plan = make_plan(ov, PlanOptions(prior_dirs=[], write=False))
    return plan.runs[0].memory.peak_mb


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def cpu_step_peak_mb(cfg, batch: dict) -> float:
    """What ``max_memory_allocated`` reports on CUDA, measured on the CPU: weights and optimiser
    state, plus the peak tensor memory of one step (forward, backward, AdamW, gradients freed)
    taken after a first step has created the optimiser state."""
    module = FtlabModule(get_adapter(cfg.adapter.name).build(base_model(cfg), cfg.adapter, cfg), cfg)
    module.model.train()
    opt = module.configure_optimizers()["optimizer"]

    def step() -> None:
        module(batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    state = [v for s in opt.state.values() for v in s.values()]
    static = tensor_bytes(module.model.parameters()) + tensor_bytes(state)
    return (static + cpu_peak_bytes(step)) / 2**20


def memory_rows(args, cuda: bool, measured: dict[str, tuple[list[str], float, dict]]) -> None:
    """One ``[mem]`` line per variant: measured peak vs the planner's estimate of that config."""
    what = "CUDA max_memory_allocated" if cuda else "weights + optimiser state + CPU step peak"
    for label, (extra, cuda_peak, batch) in measured.items():
        ov = overrides(args, cuda, *extra)
        peak = cuda_peak if cuda else cpu_step_peak_mb(compose_run(ov), batch)
        estimate = plan_estimate_mb(ov)
        print(f"[mem] {label}: measured {peak:,.1f} MiB ({what}), plan estimate {estimate:,.1f} MiB -> "
              f"measured / plan {peak / estimate:.3f} (target 0.85-1.15)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small shape (implied without CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="timed + warm-up steps (default 30 GPU, 8 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 5 GPU, 2 CPU)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=None, help="default 512 (64 with --small)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating ftlab/bare pairs for row 1")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.small:
        print("no CUDA device: running the small shape on the CPU (numbers show the rows work, not GPU speed)")
        args.small = True
    args.steps = args.steps or (30 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    args.seq_len = args.seq_len or (64 if args.small else 512)
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = compose_run(overrides(args, cuda))
    vocab = int(cfg.model.config.vocab_size)
    print(f"model {cfg.model.name}{' (small shape)' if args.small else ''}, {cfg.model.dtype} base, "
          f"precision {cfg.hardware.precision}, LoRA r={cfg.adapter.r} on {ALL_LINEARS}, "
          f"batch {args.batch_size} x {args.seq_len}, {args.steps} steps ({args.warmup} warm-up)")

    # 1. fixed-length batches: ftlab vs bare, memory vs plan
    batches = fixed_batches(args, vocab, args.steps)
    ratios = []
    for i in range(args.repeats):
        bare = bare_run(cfg, batches, args.warmup)
        ours = ftlab_run(cfg, batches, args.warmup)
        ratios.append(ours.tokens_per_sec / bare.tokens_per_sec)
        print(f"[1] repeat {i}: bare {bare.tokens_per_sec:,.0f} tok/s, ftlab {ours.tokens_per_sec:,.0f} tok/s, "
              f"ratio {ratios[-1]:.3f}")
    ratios.sort()
    print(f"[1] tokens/s ftlab / bare: {ratios[len(ratios) // 2]:.3f} (target >= 0.97)")

    # 2. packing: the same examples padded per batch vs packed into rows
    n = args.batch_size * args.steps * 2
    examples = varlen_examples(args, vocab, n)
    padded = padded_batches(args, examples)[:args.steps]
    packed = packed_batches(args, examples)[:args.steps]
    pad = ftlab_run(cfg, padded, args.warmup)
    packing = ["train.packing=true", f"train.pack_length={args.seq_len}"]  # the rows packed_batches builds
    pack = ftlab_run(compose_run(overrides(args, cuda, *packing)), packed, args.warmup)
    print(f"[2] padded: {pad.tokens_per_sec:,.0f} real tok/s, padding {1 - pad.tokens / pad.slots:.3f}, "
          f"peak {pad.peak_mb:,.0f} MiB")
    print(f"[2] packed: {pack.tokens_per_sec:,.0f} real tok/s, padding {1 - pack.tokens / pack.slots:.3f}, "
          f"peak {pack.peak_mb:,.0f} MiB")
    print(f"[2] packing speed-up (real tokens/s): {pack.tokens_per_sec / pad.tokens_per_sec:.3f}")

    # 3. gradient checkpointing
    checkpointing = ["train.gradient_checkpointing=true"]
    plain = ours
    ckpt = ftlab_run(compose_run(overrides(args, cuda, *checkpointing)), batches, args.warmup)
    print(f"[3] gradient checkpointing: tokens/s {ckpt.tokens_per_sec / plain.tokens_per_sec:.3f} x, "
          f"peak memory {ckpt.peak_mb:,.0f} / {plain.peak_mb:,.0f} MiB = {ckpt.peak_mb / plain.peak_mb:.3f} x")

    # 4. peak memory vs the planner, per variant (the packed variant: its fullest batch)
    fullest = max(packed, key=lambda b: int(b["attention_mask"].sum()))
    memory_rows(args, cuda, {"plain": ([], plain.peak_mb, batches[0]), "packing": (packing, pack.peak_mb, fullest),
                             "gradient checkpointing": (checkpointing, ckpt.peak_mb, batches[0])})

if __name__ == "__main__":
    main()
