"""Evaluation as a cached step: lm-eval's scores of one model on one benchmark, computed once.

Key (``ftlab.artifacts.keys.step_key``, kind ``eval``): the content digest of the evaluated weights
(sha256 over every parameter and buffer of the model as it is scored: names, dtypes, shapes,
bytes), the lm-eval task, the sha256 of every data file it reads, the number of shots, the
generation budget, ``limit``, the headline variant and the lm-eval version. Two models that are
bitwise equal - a sweep's control and every job's ``eval.control`` base, or two jobs that train
the same tensors - share the key, so the second is a hit. Entries live in the run's artifact
store (``paths.cache_dir``, ``python -m ftlab.cache`` lists them); each holds ``scores.json``
(every variant's record; lm-eval's per-example samples are not kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftlab.artifacts.keys import step_key
from ftlab.artifacts.manifest import file_sha256
from ftlab.artifacts.store import ArtifactStore
from ftlab.data.lm_eval_catalog import lm_eval_version
from ftlab.harness.score import Benchmark, HarnessScore, score_benchmarks

log = logging.getLogger("ftlab")
KIND, VERSION, SCORES = "eval", 1, "scores.json"


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's tensors in state-dict order (bitwise-equal models, equal digests)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def eval_config(weights: str, bench: Benchmark, limit: int | None) -> dict[str, Any]:
    """What the scores of ``bench`` depend on (the key's config)."""
    files = {split: [file_sha256(Path(f)) for f in paths] for split, paths in sorted(bench.data.files.items())}
    return {"weights": weights, "task": bench.name, "builder": bench.data.builder, "data": files,
            "num_fewshot": bench.num_fewshot, "max_gen_toks": bench.max_gen_toks, "limit": limit,
            "headline": bench.headline_variant, "lm_eval": lm_eval_version()}


def cached_scores(model: nn.Module, tokenizer, benchmarks: list[Benchmark], *, batch_size: int,
                  cache_dir: Path, limit: int | None = None, events: list[dict[str, Any]] | None = None,
                  ) -> dict[str, HarnessScore]:
    """:func:`score_benchmarks` through the artifact store: hits are read back, the misses scored
    in one lm-eval call and published. ``events`` gets one ``{task, key, hit}`` per benchmark."""
    store = ArtifactStore(cache_dir)
    weights = weights_digest(model)
    keyed = [(b, step_key(KIND, None, eval_config(weights, b, limit), VERSION)) for b in benchmarks]
    out: dict[str, HarnessScore] = {}
    for bench, key in keyed:
        entry = store.lookup(key)
        if entry is not None:
            data = json.loads((entry.artifact / SCORES).read_text())
            out[bench.name] = HarnessScore(bench.name, data["records"], data["headline"], [])
    todo = [(b, k) for b, k in keyed if b.name not in out]
    fresh = score_benchmarks(model, tokenizer, [b for b, _ in todo], batch_size=batch_size, limit=limit) if todo else {}
    for bench, key in todo:
        score = fresh[bench.name]

        def build(artifact: Path, score: HarnessScore = score) -> None:
            artifact.mkdir(parents=True, exist_ok=True)
            (artifact / SCORES).write_text(json.dumps({"records": score.records, "headline": score.headline_variant}))

        store.get_or_build(key, build, kind=KIND, parent=None, config=eval_config(weights, bench, limit),
                           version=VERSION)
        out[bench.name] = score
    for bench, key in keyed:
        hit = bench.name not in fresh
        log.info("eval cache %s: %s %s", "hit" if hit else "miss", bench.name, key[:12])
        if events is not None:
            events.append({"task": bench.name, "key": key, "hit": hit})
    return out


__all__ = ["cached_scores", "eval_config", "weights_digest"]
