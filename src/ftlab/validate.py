"""``python -m ftlab.validate checkpoint=PATH mask=PATH [report=validation_report.json] [speed=2:4 batch=16 seq=512]``

Checks that a checkpoint keeps a mask's zeros and writes ``validation_report.json``: per layer
the expected sparsity (the mask's), the achieved one (exact zeros of W), max |W| where M = 0 and
the number of such leaks; ``passed`` overall. Exit status: 0 passed, 1 failed, 2 bad input.

``checkpoint`` is a merged model directory (``<run>/model``: ``*.safetensors`` shards or
``pytorch_model.bin``), a single ``.safetensors`` file, or a training checkpoint (``state.ckpt``
or its directory). A training checkpoint of an adapter run holds the frozen base weights, not the
merged model: validate ``<run>/model`` to check what the adapter produces.

``speed=2:4`` (model directory only, after a passing validation): converts the merged linears
that hold a 2:4 pattern to ``torch.sparse.to_sparse_semi_structured`` and measures forward
latency and tokens/s against the dense model (fp16, ``batch`` × ``seq`` random tokens); the
numbers go into the report under ``speed``. It needs a CUDA GPU of compute capability >= 8.0;
elsewhere it stops with one line saying so, before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ftlab.core.console import help_requested, quiet_progress_bars, verbose
from ftlab.core.errors import ConfigError, FtlabError, report_error
from ftlab.core.io import write_json
from ftlab.evaluation.mask_validation import measure_speed, validate
from ftlab.sparsity.semi import unsupported_reason
from ftlab.training.state import STATE_FILE

KEYS = ("checkpoint", "mask", "report", "speed", "batch", "seq")
SPEEDS = ("2:4",)


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {"report": "validation_report.json"}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise ConfigError(key if eq else arg, value if eq else None, f"one of {[k + '=...' for k in KEYS]}")
        args[key] = value
    for key in ("checkpoint", "mask"):
        if not args.get(key):
            raise ConfigError(key, None, "a path (usage: python -m ftlab.validate checkpoint=PATH mask=PATH)")
    if "speed" in args:
        if args["speed"] not in SPEEDS:
            raise ConfigError("speed", args["speed"], f"one of {list(SPEEDS)}")
        for key, default in (("batch", "16"), ("seq", "512")):
            if not args.setdefault(key, default).isdigit() or int(args[key]) < 1:
                raise ConfigError(key, args[key], "a positive integer")
        if not Path(args["checkpoint"]).is_dir() or (Path(args["checkpoint"]) / STATE_FILE).is_file():
            raise ConfigError("checkpoint", args["checkpoint"], "a merged model directory (<run>/model) with speed=2:4")

        reason = unsupported_reason()
        if reason:
            raise FtlabError(f"speed=2:4 cannot be measured here: {reason}")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if help_requested(argv, __doc__):
        return
    quiet_progress_bars(verbose())  # a merged MoE dir loads through transformers, whose bar is not ftlab's line
    try:
        args = parse_args(argv)
        report = validate(args["checkpoint"], args["mask"], args["report"])
        if "speed" in args and report["passed"]:
            report["speed"] = measure_speed(args["checkpoint"], int(args["batch"]), int(args["seq"]))
            write_json(Path(args["report"]), report)
            sp = report["speed"]
            print(f"ftlab: 2:4 speed-up {sp['speedup']:.3f}x ({sp['dense_latency_ms']:.2f} ms dense, "
                  f"{sp['sparse_latency_ms']:.2f} ms 2:4 at batch {sp['batch']} x seq {sp['seq']}; "
                  f"{sp['sparse_tokens_per_s']:.0f} vs {sp['dense_tokens_per_s']:.0f} tokens/s)")
    except FtlabError as err:
        sys.exit(report_error(err))
    if report["passed"]:
        print(f"ftlab: validation passed: 0 leaks, sparsity {report['achieved_sparsity']:.4f} "
              f"(mask {report['expected_sparsity']:.4f}); report: {args['report']}")
        return
    bad = sum(1 for layer in report["layers"].values() if not layer["passed"])
    print(f"ftlab: validation failed: {report['leaks']} leaks in {bad} layers "
          f"(max |W| where M=0: {report['max_abs_where_pruned']:.3g}); report: {args['report']}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
