"""End-to-end check of ``hardware=fsdp`` through ``python -m ftlab``: train, resume, export.

    python benchmarks/fsdp_check.py [--device auto|cuda|cpu] [--out DIR] [--steps 8]

On CUDA (``auto`` picks it when a GPU is visible) it runs Lightning's real FSDP path on ONE GPU
(world size 1: NCCL allows one process per device), bf16-mixed, on a Qwen2-shaped model (tiny_qwen2
widened to hidden 256) with LoRA on every decoder linear; on a CPU it runs 2 gloo ranks in fp32.
Each line printed is ``PASS|FAIL <check>: <numbers>``; the exit status is 1 when any check fails.

Checks:
  1. ``train``     the sharded run finishes, writes checkpoints holding the trainable tensors only,
                   ``adapter/`` and ``model/``;
  2. ``reference`` the same run without FSDP (hardware=gpu / DDP on CPU): per-step losses agree
                   (max |diff| printed) and the trained adapters agree;
  3. ``resume``    the run resumed from its middle checkpoint ends with the uninterrupted adapter
                   (bit for bit is required; the max |diff| is printed either way);
  4. ``export``    ``model/`` loads into a plain transformers model whose logits equal the base
                   model + ``adapter/`` through peft;
  5. ``bf16-base`` (CUDA only) a frozen bf16 base with fp32 LoRA weights trains under FSDP's bf16-mixed
                   policy (the trainable leaves are their own FSDP units, so no flat parameter mixes
                   dtypes) and its ``model/`` holds exactly the bf16 base + ``adapter/`` merged by peft
                   (rank 0 rebuilds the frozen base from its pre-wrap tensors, not FSDP's gathered state).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

MODEL = ["model=tiny_qwen2", "model.config.hidden_size=256", "model.config.intermediate_size=512",
         "model.config.num_hidden_layers=4", "adapter=lora", "adapter.dropout=0.0"]
COMMON = ["train.batch_size=4", "task.num_examples=200", "task.eval_examples=16", "eval.generate=false",
          "train.log_every_n_steps=1", "train.log_measurements=false"]
FAILED: list[str] = []


def report(ok: bool, name: str, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def ftlab(run: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftlab", *overrides, f"hydra.run.dir={run}"], capture_output=True,
                          text=True, timeout=1800)


def losses(run: Path) -> list[float]:
    with open(run / "loss_log.csv", newline="") as fh:
        return [float(r["train_loss"]) for r in csv.DictReader(fh)]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary dir)")
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    out = args.out or Path(tempfile.mkdtemp(prefix="ftlab-fsdp-check-"))
    steps = [f"train.max_steps={args.steps}", f"train.save_every_n_steps={args.steps // 2}"]
    if cuda:
        hw = ["hardware=fsdp", "hardware.devices=1"]  # accelerator=gpu, bf16-mixed (conf/hardware/fsdp.yaml)
        ref_hw = ["hardware=gpu"]
    else:
        hw = ["hardware=fsdp", "hardware.accelerator=cpu", "hardware.devices=2", "hardware.precision=32-true",
              "model.config.hidden_size=64", "model.config.intermediate_size=128", "model.config.num_hidden_layers=2"]
        ref_hw = ["hardware=cpu", "hardware.devices=2", "model.config.hidden_size=64",
                  "model.config.intermediate_size=128", "model.config.num_hidden_layers=2"]
    print(f"fsdp check on {'cuda' if cuda else 'cpu (2 gloo ranks)'}; runs under {out}", flush=True)
    cfg_args = [*MODEL, *COMMON, *steps]

    fsdp = out / "fsdp"
    proc = ftlab(fsdp, *cfg_args, *hw)
    if proc.returncode != 0:
        report(False, "train", f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        return 1
    from ftlab.training.state import STATE_FILE, STATE_KEY, checkpoints_newest_first

    ckpts = checkpoints_newest_first(fsdp)
    state = torch.load(ckpts[0] / STATE_FILE, map_location="cpu", weights_only=True)
    trainable_only = set(state["state_dict"]) == set(state[STATE_KEY]["trainable"])
    metrics = json.loads((fsdp / "metrics.json").read_text())
    report(trainable_only and (fsdp / "model").is_dir() and (fsdp / "adapter").is_dir()
           and metrics["train_steps"] == args.steps, "train",
           f"{metrics['train_steps']} steps, {len(ckpts)} checkpoints of {len(state['state_dict'])} trainable tensors "
           f"({(ckpts[0] / STATE_FILE).stat().st_size / 2**20:.2f} MB), val_loss {metrics.get('val_loss', float('nan')):.4f}, "
           f"peak {metrics['peak_memory_mb']:.0f} MB, {metrics['tokens_per_sec']:.0f} tokens/s")

    ref = out / "reference"
    proc = ftlab(ref, *cfg_args, *ref_hw)
    if proc.returncode != 0:
        report(False, "reference", f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    else:
        a, b = losses(fsdp), losses(ref)
        dl = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")
        dw = max_diff(adapter(fsdp), adapter(ref))
        tol = (5e-2, 2e-2) if cuda else (1e-4, 1e-5)  # bf16 compute (FSDP casts weights, hardware=gpu autocasts) on CUDA
        report(dl <= tol[0] and dw <= tol[1], "reference",
               f"max |loss diff| {dl:.2e} over {len(a)} steps, max |adapter diff| {dw:.2e} (tolerances {tol})")

    resumed = out / "resumed"
    shutil.copytree(fsdp, resumed)
    shutil.rmtree(checkpoints_newest_first(resumed)[0])
    for d in ("adapter", "model"):
        shutil.rmtree(resumed / d)
    proc = ftlab(resumed, *cfg_args, *hw, "resume=auto")
    if proc.returncode != 0:
        report(False, "resume", f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    else:
        full, again = adapter(fsdp), adapter(resumed)
        exact = full.keys() == again.keys() and all(torch.equal(full[k], again[k]) for k in full)
        start = json.loads((resumed / "metrics.json").read_text())["resumed_from_step"]
        report(exact and start == args.steps // 2, "resume",
               f"from step {start}: {'bit for bit' if exact else 'DIFFERS'}, max |diff| {max_diff(full, again):.2e}")

    check_export(fsdp, [*cfg_args, *(hw if not cuda else [])])

    if cuda:  # a bf16 base under FSDP's bf16-mixed policy: fp32 adapters, and the export holds the base
        bf16 = out / "bf16_base"
        proc = ftlab(bf16, *cfg_args, *hw, "model.dtype=bfloat16")
        if proc.returncode != 0:
            report(False, "bf16-base", f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        else:
            check_bf16_base(bf16, [*cfg_args, "model.dtype=bfloat16"])
    print(f"{'ALL PASS' if not FAILED else 'FAILED: ' + ', '.join(FAILED)}", flush=True)
    return 1 if FAILED else 0


def check_export(run: Path, overrides: list[str]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftlab.preflight.compose import compose_run
    from ftlab.recipe.run import prepare_model

    merged = AutoModelForCausalLM.from_pretrained(str(run / "model"), dtype=torch.float32).eval()
    _, base = prepare_model(compose_run([o for o in overrides if not o.startswith("hardware")]))
    peft_model = PeftModel.from_pretrained(base.float(), str(run / "adapter")).eval()
    ids = torch.randint(0, 250, (2, 32))
    with torch.no_grad():
        a, b = merged(input_ids=ids).logits, peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            moved = float((a - peft_model(input_ids=ids).logits).abs().max())
    diff = float((a - b).abs().max())
    report(diff <= 1e-4 and moved > 1e-4, "export",
           f"model/ vs base + adapter/ max |logit diff| {diff:.2e}; vs the untrained base {moved:.2e}")



def check_bf16_base(run: Path, overrides: list[str]) -> None:
    """``adapter/`` of a bf16-base run holds fp32 tensors, and ``model/`` equals (bit for bit) the bf16
    base built from ``overrides`` with ``adapter/`` merged into it by peft: the weights a run
    without FSDP would export from the same adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftlab.preflight.compose import compose_run
    from ftlab.recipe.run import prepare_model

    dtypes = sorted({str(v.dtype) for v in adapter(run).values()})
    got = AutoModelForCausalLM.from_pretrained(str(run / "model"), dtype="auto").state_dict()
    _, base = prepare_model(compose_run([o for o in overrides if not o.startswith("hardware")]))
    untrained = {k: v.clone() for k, v in base.state_dict().items()}
    want = PeftModel.from_pretrained(base, str(run / "adapter")).merge_and_unload().state_dict()
    same_keys = got.keys() == want.keys()
    diff = max(float((got[k].float() - want[k].float()).abs().max()) for k in got) if same_keys else float("inf")
    moved = max(float((got[k].float() - untrained[k].float()).abs().max()) for k in got if k in untrained)
    exact = same_keys and all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in got)
    report(dtypes == ["torch.float32"] and exact and moved > 0, "bf16-base",
           f"adapter dtypes {dtypes}; model/ ({sorted({str(v.dtype) for v in got.values()})}) vs bf16 base + adapter/ "
           f"max |diff| {diff:.2e} ({'bit for bit' if exact else 'DIFFERS'}); vs the untrained base {moved:.2e}")


if __name__ == "__main__":
    sys.exit(main())
