"""``python -m ftlab.analyze SWEEP --table benchmarks``: the paper table from the runs' metrics.json."""

from __future__ import annotations

import csv
import json

import yaml

from ftlab.analyze import main


def _run(path, adapter: dict, scores: dict[str, tuple[float, float | None]], average: float | None = None):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"adapter": adapter, "seed": 1, "task": {"name": "x"}}))
    bench = {t: {"task": t, "headline": "word_perplexity" if t == "wikitext" else "acc", "value": v, "stderr": e,
                 "n": 10, "n_shot": 0, "metrics": []} for t, (v, e) in scores.items()}
    metrics = {"val_loss": 1.0, "benchmarks": bench}
    if average is not None:
        metrics.update(benchmark_suite="mini", benchmark_average=average)
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_table_rows_columns_control_first(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _run(sweep / "0", {"name": "lora", "r": 4}, {"piqa": (0.6, 0.1), "winogrande": (0.5, 0.2)}, average=0.55)
    _run(sweep / "1", {"name": "lora", "r": 8}, {"piqa": (0.7, 0.1), "winogrande": (0.4, 0.2)}, average=0.55)
    _run(sweep / "2", {"name": "none"}, {"piqa": (0.5, 0.1), "winogrande": (0.3, None)})  # the control
    assert main([str(sweep), "--table", "benchmarks"]) == 0
    rows = list(csv.DictReader(open(sweep / "analysis" / "benchmarks.csv")))
    assert [r["run"] for r in rows] == ["adapter.name=none", "adapter.name=lora adapter.r=4",
                                        "adapter.name=lora adapter.r=8"]
    assert list(rows[0])[:5] == ["run", "piqa", "piqa_stderr", "winogrande", "winogrande_stderr"]
    assert float(rows[0]["average"]) == 0.4  # no suite: the unweighted mean of its columns
    assert float(rows[1]["average"]) == 0.55 and float(rows[2]["piqa"]) == 0.7
    md = (sweep / "analysis" / "benchmarks.md").read_text()
    assert md.splitlines()[0] == "| run | piqa (acc) | winogrande (acc) | average |"
    assert "| adapter.name=none | 0.5000 ± 0.1000 | 0.3000 | 0.4000 |" in md
    assert md in capsys.readouterr().out


def test_no_benchmarks_is_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val_loss": 1.0}))
    assert main([str(tmp_path), "--table", "benchmarks"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--table benchmarks" in err and "eval.suite" in err
