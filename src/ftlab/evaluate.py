"""``python -m ftlab.evaluate RUN_DIR|MODEL_DIR [task=NAME] [task.path=FILE] [task.*=...] [eval.*=...] [--out FILE]``

Scores a finished run or a model directory on BoolQ/HellaSwag/GSM8K with lm-evaluation-harness
exactly as a run's final numbers are scored (``ftlab.harness``), and writes ``eval.json`` next to
it (or to ``--out``):

- RUN_DIR (has ``config.yaml``): the run's task and its test split by default (``task.path=FILE``
  on the command line scores every row of FILE instead). Weights: the exported merged model
  (``model/``), else the exported adapter (``adapter/``, loaded through peft onto the run's base),
  else, for a control run (``adapter=none``), the run's base model rebuilt from its config.
  ``--weights`` picks one explicitly.
- MODEL_DIR: an HF model dir (``config.json``), or a peft adapter dir (``adapter_config.json``)
  whose ``base_model_name_or_path`` is a local model dir. ``task=NAME task.path=FILE`` are
  required; every row of FILE is scored.

With ``eval.suite=NAME`` and/or ``eval.benchmarks=[...]`` (and their ``eval.data.<task>``,
``eval.num_fewshot``, ``eval.limit``, ``eval.max_gen_toks``; ``+eval.suites.NAME=[...]`` adds a
suite) the weights are scored on those lm-eval tasks instead, exactly as a run scores them after
training and through the same evaluation cache (the run's ``paths.cache_dir``): ``eval.json``
holds ``benchmarks``, ``benchmark_suite`` and ``benchmark_average`` as ``metrics.json`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftlab.core.errors import FtlabError, report_error
from ftlab.recipe.evaluate_target import WEIGHTS, evaluate_target, result_lines, write_eval


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ftlab.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("target", type=Path, help="a run dir, an HF model dir or a peft adapter dir")
    p.add_argument("overrides", nargs="*", help="task=NAME, task.path=FILE, task.options.KEY=VALUE ...")
    p.add_argument("--out", type=Path, default=None, help="where to write eval.json (default: TARGET/eval.json)")
    p.add_argument("--weights", choices=WEIGHTS, default="auto", help="run dirs: which weights to score")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's train.eval_batch_size")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = evaluate_target(args)
    except FtlabError as err:
        return report_error(err)
    out = args.out or args.target / "eval.json"
    write_eval(out, result)
    print("\n".join(result_lines(result, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
