"""Bytes of a checkpoint and of a cached stage per trainable parameter, measured on real runs.

    python benchmarks/checkpoint_size.py [--adapters lora,dora,sora,masked,full] [--hidden 512]
                                         [--out DIR] [--json FILE]

For each adapter one real ``ftlab.recipe.run.run`` trains a widened tiny Llama (``--hidden``; the
intermediate size scales with it) for two stages of two steps (``schedule=stages`` with a fresh
reuse cache, ``train.save_every_n_steps=2``), so it writes step checkpoints and cached stage
entries exactly as a user's run does. Reported per adapter:

* ``ckpt``  = bytes of one step checkpoint dir (``state.ckpt`` + ``meta.json``)
* ``stage`` = bytes of one cached stage entry (every file of the entry: state, meta, logs,
  config, manifest)

each divided by ``trainable parameters x 4 bytes``. Target (issue 10): <= 3.3 for every adapter
(fp32 values + two AdamW moments + small state); for ``full`` the trainable parameters are all
weights. ``masked`` runs over an unstructured 50 % mask. The column ``before`` is what the
previous format (every frozen weight in the state) would have written: the measured bytes plus
the frozen weights.

Then the projection for ``model=llama3_8b adapter=lora adapter.r=16`` from the meta device (no
weights allocated): the planner's byte model (:func:`ftlab.adapters.params.state_bytes`), the same
model checked against the measured tiny runs above.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

TARGET = 3.3
ADAPTERS = ("lora", "dora", "sora", "masked", "full")
EXTRA = {"masked": ["sparsity=unstructured", "sparsity.level=0.5"]}


def widened(hidden: int) -> list[str]:
    heads = max(2, hidden // 64)
    return [f"model.config.hidden_size={hidden}", f"model.config.intermediate_size={int(hidden * 2.6875)}",
            f"model.config.num_attention_heads={heads}", f"model.config.num_key_value_heads={max(1, heads // 2)}"]


def common(hidden: int, cache: Path) -> list[str]:
    return [*widened(hidden), "task.num_examples=64", "train.batch_size=8", "task.max_length=64",
            "schedule=stages", "schedule.stages=[{iters:2,lr:1e-3},{iters:2,lr:5e-4}]",
            "train.save_every_n_steps=2", "train.save_epoch_checkpoints=false", "train.log_every_n_steps=1",
            "eval.enabled=false", "train.save_adapter=false", "train.save_merged_model=false",
            f"paths.cache_dir={cache}"]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure(adapter: str, hidden: int, root: Path) -> dict:
    from ftlab.artifacts.store import ArtifactStore
    from ftlab.preflight.compose import compose_run
    from ftlab.recipe.run import run

    cache, run_dir = root / f"cache-{adapter}", root / f"run-{adapter}"
    cfg = compose_run([f"adapter={adapter}", *common(hidden, cache), *EXTRA.get(adapter, [])])
    run(cfg, run_dir=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    trainable, total = int(metrics["trainable_params"]), int(metrics["total_params"])
    ckpt = run_dir / "checkpoints" / "checkpoint-epoch0-step2"
    stage = [e for e in ArtifactStore(cache).entries() if e.info()["kind"] == "stage"
             and json.loads((e.artifact / "meta.json").read_text())["stage_idx"] == 1]
    ckpt_bytes, stage_bytes = dir_bytes(ckpt), dir_bytes(stage[0].root)
    unit = 4 * trainable
    frozen = (total - trainable) * 4  # fp32 tiny model
    return {"adapter": adapter, "trainable": trainable, "total": total, "ckpt_bytes": ckpt_bytes,
            "stage_bytes": stage_bytes, "ckpt_ratio": ckpt_bytes / unit, "stage_ratio": stage_bytes / unit,
            "before_ratio": (ckpt_bytes + frozen) / unit, "state_file_bytes": (ckpt / "state.ckpt").stat().st_size}


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def projection(model: str = "llama3_8b", adapter: str = "lora", r: int = 16) -> dict:
    from ftlab.adapters.params import model_facts, state_bytes, trainable_params, weights_bytes
    from ftlab.preflight.compose import compose_run

    cfg = compose_run([f"model={model}", f"adapter={adapter}", f"adapter.r={r}"])
    facts = model_facts(cfg.model)  # meta device: nothing allocated, nothing downloaded
    trainable = trainable_params(facts, cfg)
    new = state_bytes(trainable, adapter, str(cfg.model.dtype))
    before = new + weights_bytes(facts, str(cfg.model.dtype)) - trainable * 2  # + frozen bf16 weights
    return {"model": model, "adapter": f"{adapter} r={r}", "total": facts.total, "trainable": trainable,
            "state_bytes": new, "ratio": new / (4 * trainable), "before_bytes": before}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapters", default=",".join(ADAPTERS))
    p.add_argument("--hidden", type=int, default=512, help="hidden size of the widened tiny Llama")
    p.add_argument("--out", type=Path, default=None, help="keep the run dirs here (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    from ftlab.adapters.params import state_bytes

    rows = []
    with tempfile.TemporaryDirectory(prefix="ftlab-ckpt-size-") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for adapter in [a for a in args.adapters.split(",") if a]:
            rows.append(measure(adapter, args.hidden, root))
    print(f"\nwidened tiny Llama (hidden={args.hidden}); ratio = bytes / (trainable params x 4 B); target <= {TARGET}")
    print(f"{'adapter':<8} {'trainable':>10} {'of total':>9} {'ckpt':>10} {'ratio':>6} {'stage entry':>12} "
          f"{'ratio':>6} {'before':>7} {'model':>6}  ok")
    ok = True
    for r in rows:
        model = state_bytes(r["trainable"], r["adapter"], "float32") / r["state_file_bytes"]
        good = r["ckpt_ratio"] <= TARGET and r["stage_ratio"] <= TARGET
        ok &= good
        print(f"{r['adapter']:<8} {r['trainable']:>10} {r['trainable'] / r['total']:>8.1%} "
              f"{fmt_bytes(r['ckpt_bytes']):>10} {r['ckpt_ratio']:>6.3f} {fmt_bytes(r['stage_bytes']):>12} "
              f"{r['stage_ratio']:>6.3f} {r['before_ratio']:>7.2f} {model:>6.3f}  {'ok' if good else 'OVER'}")
    print("(before = the previous format with every frozen weight; model = the planner's estimate / measured state)")
    proj = projection()
    print(f"\nprojection, model={proj['model']} adapter={proj['adapter']} (meta device): {proj['trainable']:,} trainable "
          f"of {proj['total']:,}; one checkpoint / cached stage ~ {fmt_bytes(proj['state_bytes'])} "
          f"(ratio {proj['ratio']:.3f}); the previous format: ~ {fmt_bytes(proj['before_bytes'])} "
          f"(x{proj['before_bytes'] / proj['state_bytes']:.0f})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "projection": proj}, indent=2))
    return 0 if ok and all(math.isfinite(r["ckpt_ratio"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
