"""Sparse fine-tuning costs, as ratios against baselines measured in the same invocation.

    python benchmarks/sparsity.py [--steps 40] [--rounds 3] [--layers 6] [--threads 1] [--skip-global]
        [--skip-steps] [--skip-quality] [--skip-importance-times] [--base-steps 300] [--importance-layers 6]

1. Step time of ``adapter=masked`` vs ``adapter=lora`` on the same tiny model with the same 50 %
   sparse base and batches (forward + backward + AdamW step). Rounds alternate the two adapters;
   the ratio is of the median step times. Target <= 1.15.
2. Global unstructured magnitude mask over >= 1e8 parameters (a Llama with random weights,
   hidden 1024, intermediate 4096, ``--layers`` decoder layers) through ``compute_masks``:
   seconds, the ratio to one ``torch.abs`` pass over the same weights (target <= 6) and peak
   extra memory as a multiple of the weights' bytes (target <= 1.5). For comparison, the naive
   approach (concatenate all scores, ``kthvalue``) is measured the same way. Times are the best
   of ``--repeats`` calls; memory is the first call's.

3. Pruning quality at 50 % on a tiny Llama pre-trained on the task corpus (``base.enabled``):
   per importance (magnitude, Wanda, SparseGPT; each also with ``allocation=owl``) the summed
   layer-wise reconstruction error ‖WXᵀ − ŴXᵀ‖² per calibration token over all pruned linears
   (X: each linear's inputs in the dense model over the calibration batches), its ratio to
   magnitude's, and the val loss of the pruned model next to the dense one's.
4. Time to compute each importance's masks (``compute_pruned``) on the 1e8-parameter Llama of 2.
   (``--importance-layers`` decoder layers, calibration ``8 x 8`` task examples), as ratios to
   magnitude's time measured in the same invocation.

Both CPU time (``time.process_time``: this process's user + system time, robust when other jobs
share the cores) and wall time are reported; with one thread they agree on an idle machine.

Memory is the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
minus the resident set before the step, each measurement in a fresh process: torch's CPU
allocations are invisible to tracemalloc, and a process-wide high-water mark from earlier work
would hide the step's own peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

TINY = ["sparsity=unstructured", "sparsity.level=0.5", "train.batch_size=16", "task.num_examples=400"]


# -- 1. masked vs lora step time --------------------------------------------------------------
def _adapted(name: str, cfg, tok, masks):
    from ftlab.adapters.registry import get_adapter
    from ftlab.models import build_model
    from ftlab.sparsity.apply import apply_masks_
    from ftlab.sparsity.pipeline import attach_masks

    model = build_model(cfg.model, tok, seed=0)
    apply_masks_(model, masks)
    return attach_masks(get_adapter(name).build(model, cfg.adapter, cfg), masks, cfg)


def step_times(steps: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    from ftlab.data.encoding import collate, encode_example
    from ftlab.data.tasks import build_task
    from ftlab.models import build_model, build_tokenizer
    from ftlab.preflight.compose import compose_run
    from ftlab.sparsity.compute import compute_masks

    cfg = compose_run(TINY)
    tok = build_tokenizer(cfg.model)
    masks = compute_masks(cfg, build_model(cfg.model, tok, seed=0), tok)
    train = build_task(cfg.task).splits(cfg.seed).train
    enc = [encode_example(tok, e.prompt, e.answer, cfg.task.max_length) for e in train]
    bs = cfg.train.batch_size
    per_epoch = len(enc) // bs  # cycle through the split when more steps than batches are asked for
    batches = [collate(enc[(i % per_epoch) * bs:(i % per_epoch + 1) * bs], tok.pad_token_id) for i in range(steps)]
    runs = {}
    for name in ("lora", "masked"):
        adapted = _adapted(name, compose_run([*TINY, f"adapter={name}"]), tok, masks)
        opt = torch.optim.AdamW(adapted.param_groups(1e-3, 0.0), lr=1e-3)
        runs[name] = (adapted, opt)
    # Steps alternate between the adapters (same batch, order flipped every step), so both see the
    # same load from whatever else runs on the machine.
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in runs}
    for r in range(rounds + 1):  # round 0 warms up allocators and kernels, not recorded
        for i, b in enumerate(batches):
            for name in (("lora", "masked") if (i + r) % 2 else ("masked", "lora")):
                adapted, opt = runs[name]
                adapted.model.train()
                w0, c0 = time.perf_counter(), time.process_time()
                adapted.model(**b).loss.backward()
                opt.step()
                adapted.after_optimizer_step(opt)
                opt.zero_grad(set_to_none=True)
                if r:
                    times[name]["wall"].append(time.perf_counter() - w0)
                    times[name]["cpu"].append(time.process_time() - c0)
    return times


# -- 2. global mask over >= 1e8 parameters (runs in a child process) --------------------------
def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))


def _hwm_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def child_global(kind: str, layers: int, repeats: int) -> dict:
    """One measurement (``abs`` | ``ftlab`` | ``naive``) in this fresh process."""
    from ftlab.models import build_model
    from ftlab.preflight.compose import compose_run
    from ftlab.sparsity.compute import compute_masks
    from ftlab.sparsity.selection import select_modules

    cfg = compose_run(["sparsity=unstructured", "sparsity.group=global", "sparsity.level=0.5",
                       "model.config.hidden_size=1024", "model.config.intermediate_size=4096",
                       f"model.config.num_hidden_layers={layers}", "model.config.num_attention_heads=8",
                       "model.config.num_key_value_heads=8"])
    with torch.no_grad():
        model = build_model(cfg.model, None, seed=0)
    weights = [lin.weight for lin in select_modules(model, cfg.sparsity.modules).values()]
    n = sum(w.numel() for w in weights)
    weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    def once():
        if kind == "abs":
            return [w.detach().abs() for w in weights]
        if kind == "ftlab":
            return compute_masks(cfg, model, None)
        # naive: every score in one tensor, one selection over all of them
        flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
        t = flat.kthvalue(int(0.5 * n + 0.5)).values
        return [w.detach().abs() > t for w in weights]

    base = _rss_kb()
    _reset_hwm()
    w0, c0 = time.perf_counter(), time.process_time()
    out = once()
    wall, cpu = [time.perf_counter() - w0], [time.process_time() - c0]
    extra = (_hwm_kb() - base) * 1024  # the first call's peak: nothing was cached before it
    for _ in range(repeats - 1):  # timing: best of several (the CPU is shared)
        out = None
        w0, c0 = time.perf_counter(), time.process_time()
        out = once()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    result = {"kind": kind, "params": n, "weight_bytes": weight_bytes, "seconds": min(wall), "cpu_seconds": min(cpu),
              "peak_extra_bytes": extra}
    if kind == "ftlab":
        result["sparsity"] = 1 - sum(int(m.sum()) for m in out.values()) / n
    return result


def run_child(kind: str, layers: int, threads: int, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--layers", str(layers),
                           "--threads", str(threads), "--repeats", str(repeats)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- 3. pruning quality ---------------------------------------------------------------------------
QUALITY = [("magnitude", "uniform"), ("wanda", "uniform"), ("sparsegpt", "uniform"),
           ("magnitude", "owl"), ("wanda", "owl"), ("sparsegpt", "owl")]


def dense_hessians(model, linears: dict, batches: list) -> dict:
    """H = 2XᵀX/N of every pruned linear's inputs in the dense model (real tokens only)."""
    from ftlab.sparsity.compute import input_stats
    from ftlab.sparsity.sparsegpt import HessianAccumulator

    acc = input_stats(model, linears, batches, lambda lin: HessianAccumulator(lin.in_features))
    return {n: a.H for n, a in acc.items()}


def quality(base_steps: int, level: float) -> None:
    import copy

    from ftlab.data.inference import loss_on
    from ftlab.data.tasks import build_task
    from ftlab.preflight.compose import compose_run
    from ftlab.recipe.run import prepare_model
    from ftlab.sparsity.calibration import calibration_batches
    from ftlab.sparsity.compute import compute_pruned
    from ftlab.sparsity.selection import canonical_parameters, select_modules
    from ftlab.sparsity.sparsegpt import reconstruction_error

    common = ["sparsity=unstructured", f"sparsity.level={level}", "base.enabled=true", f"base.steps={base_steps}",
              "reuse.enabled=false", "model.config.num_hidden_layers=4", "sparsity.owl.lambda=0.1"]
    cfg = compose_run(common)
    tok, model = prepare_model(cfg)
    val = build_task(cfg.task).splits(cfg.seed).val
    linears = select_modules(model, cfg.sparsity.modules)
    H = dense_hessians(model, linears, calibration_batches(cfg, tok))
    dense_loss = loss_on(model, tok, val, cfg.task.max_length, 32)
    print(f"[pruning quality] tiny_llama (4 layers) pre-trained {base_steps} steps on the task corpus; level {level}; "
          f"dense val loss {dense_loss:.4f}")
    rows = {}
    for importance, allocation in QUALITY:
        c = compose_run([*common, f"sparsity.importance={importance}", f"sparsity.allocation={allocation}"])
        t0 = time.perf_counter()
        pruned = compute_pruned(c, model, tok)
        seconds = time.perf_counter() - t0
        m = copy.deepcopy(model)
        params = canonical_parameters(m)
        with torch.no_grad():
            for n, keep in pruned.masks.items():
                w = pruned.weights[n] if pruned.weights else params[n].detach()
                params[n].copy_(w.masked_fill(~keep, 0))
        err = sum(reconstruction_error(linears[n].weight, params[n], H[n]) for n in pruned.masks)
        rows[(importance, allocation)] = (err, loss_on(m, tok, val, cfg.task.max_length, 32), seconds)
    mag = rows[("magnitude", "uniform")][0]
    for (importance, allocation), (err, loss, seconds) in rows.items():
        print(f"  {importance:9s} {allocation:7s} layer error {err:12.4f} (x{err / mag:6.3f} magnitude)   "
              f"val loss {loss:.4f}   ({seconds:.1f} s)")


# -- 4. time per importance -------------------------------------------------------------------------
IMPORTANCE_TIMES = [("magnitude", "uniform"), ("random", "uniform"), ("gradient", "uniform"), ("taylor", "uniform"),
                    ("wanda", "uniform"), ("sparsegpt", "uniform"), ("magnitude", "owl"), ("wanda", "owl")]


def importance_times(layers: int, threads: int) -> None:
    from ftlab.models import build_model, build_tokenizer
    from ftlab.preflight.compose import compose_run
    from ftlab.sparsity.compute import compute_pruned
    from ftlab.sparsity.selection import select_modules

    big = ["sparsity=unstructured", "sparsity.level=0.5", "model.config.hidden_size=1024",
           "model.config.intermediate_size=4096", f"model.config.num_hidden_layers={layers}",
           "model.config.num_attention_heads=8", "model.config.num_key_value_heads=8"]
    cfg = compose_run(big)
    tok = build_tokenizer(cfg.model)
    with torch.no_grad():
        model = build_model(cfg.model, tok, seed=0)
    n = sum(lin.weight.numel() for lin in select_modules(model, cfg.sparsity.modules).values())
    total = sum(p.numel() for p in model.parameters())
    print(f"[importance time] Llama hidden 1024, intermediate 4096, {layers} layers: {total / 1e6:.1f}M parameters, "
          f"{n / 1e6:.1f}M pruned; calibration {cfg.sparsity.calibration.batches} x "
          f"{cfg.sparsity.calibration.batch_size} examples; {threads} thread(s)")
    times = {}
    for importance, allocation in IMPORTANCE_TIMES:
        c = compose_run([*big, f"sparsity.importance={importance}", f"sparsity.allocation={allocation}"])
        w0, c0 = time.perf_counter(), time.process_time()
        compute_pruned(c, model, tok)
        times[(importance, allocation)] = (time.process_time() - c0, time.perf_counter() - w0)
    base_cpu, base_wall = times[("magnitude", "uniform")]
    for (importance, allocation), (cpu, wall) in times.items():
        print(f"  {importance:9s} {allocation:7s} cpu {cpu:8.2f} s (x{cpu / base_cpu:8.1f})   "
              f"wall {wall:8.2f} s (x{wall / base_wall:8.1f})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="steps per adapter per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layers", type=int, default=6, help="decoder layers of the 1e8-parameter model")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = stable on a shared CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timings per global-mask measurement (best kept)")
    p.add_argument("--skip-global", action="store_true")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-importance-times", action="store_true")
    p.add_argument("--base-steps", type=int, default=300, help="pre-training steps of the quality model")
    p.add_argument("--importance-layers", type=int, default=6, help="decoder layers of the timing model")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_global(args.child, args.layers, args.repeats)))
        return

    if not args.skip_quality:
        quality(args.base_steps, 0.5)
    if not args.skip_importance_times:
        importance_times(args.importance_layers, args.threads)
    if args.skip_steps:
        return
    times = step_times(args.steps, args.rounds)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    print(f"[step time] tiny_llama, 50% sparse base, batch 16, {len(times['lora']['cpu'])} steps each "
          f"(interleaved), {args.threads} thread(s); median per step")
    for n in ("lora", "masked"):
        print(f"  {n:6s} cpu {med[n]['cpu'] * 1e3:8.2f} ms   wall {med[n]['wall'] * 1e3:8.2f} ms")
    print(f"  ratio masked/lora = {med['masked']['cpu'] / med['lora']['cpu']:.3f} cpu time, "
          f"{med['masked']['wall'] / med['lora']['wall']:.3f} wall time  (target <= 1.15)")
    if args.skip_global:
        return
    res = {k: run_child(k, args.layers, args.threads, args.repeats) for k in ("abs", "ftlab", "naive")}
    gb = res["abs"]["weight_bytes"] / 2**30
    print(f"[global magnitude mask] {res['abs']['params'] / 1e6:.1f}M parameters ({gb:.2f} GiB fp32), level 0.5")
    a = res["abs"]
    for k, label in (("abs", "torch.abs pass"), ("ftlab", "ftlab compute_masks"), ("naive", "naive cat+kthvalue")):
        r = res[k]
        print(f"  {label:20s} cpu {r['cpu_seconds']:6.2f} s (x{r['cpu_seconds'] / a['cpu_seconds']:5.2f})  "
              f"wall {r['seconds']:6.2f} s (x{r['seconds'] / a['seconds']:5.2f})  "
              f"peak extra {r['peak_extra_bytes'] / 2**30:4.2f} GiB = {r['peak_extra_bytes'] / r['weight_bytes']:.2f}x weights")
    f = res["ftlab"]
    print(f"  achieved sparsity {f['sparsity']:.6f}")
    print(f"  ratio ftlab/abs = {f['cpu_seconds'] / a['cpu_seconds']:.2f} cpu time, {f['seconds'] / a['seconds']:.2f} "
          f"wall time (target <= 6); peak extra memory = {f['peak_extra_bytes'] / f['weight_bytes']:.2f}x weights "
          "(target <= 1.5)")

if __name__ == "__main__":
    main()
