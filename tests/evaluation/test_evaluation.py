"""``ftlab.evaluation.metrics``: exact match and :func:`evaluate` on a constructed bigram Llama that answers
" AB" to every prompt ending in ":", against hand-computed values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bigram_model import bigram_model, byte_tokenizer, nll
from ftlab.data.tasks import Example, Splits
from ftlab.evaluation.metrics import (
    SCORERS,
    evaluate,
    exact_match,
    final_evaluate,
    normalize_answer,
    uses_harness,
)

TABLE = {":": " ", " ": "A", "A": "B", "B": "</s>"}


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return bigram_model(tok, TABLE)


def config(**task) -> OmegaConf:
    return OmegaConf.create({
        "seed": 0,
        "task": {"name": "capitalization", "metric": "exact_match", "max_length": 32, "max_new_tokens": 6,
                 "eval_examples": 0, "options": {}, **task},
        "train": {"eval_batch_size": 2},
        "eval": {"enabled": True, "generate": True, "harness": True},
    })


def test_normalize_answer_ignores_outer_and_repeated_whitespace():
    assert normalize_answer("  A \n B  ") == "A B" and normalize_answer("AB") != normalize_answer("A B")


def test_exact_match_counts_normalised_equal_answers(model, tok):
    examples = [Example("Q1:", " AB"), Example("Q2:", "AB  "), Example("Q3:", " XY"), Example("Q4:", " A B")]
    assert exact_match(model, tok, examples, max_new_tokens=6, batch_size=3) == 0.5
    assert exact_match(model, tok, examples[:2], max_new_tokens=1, batch_size=2) == 0.0  # " A" only


def test_evaluate_gives_val_loss_and_the_metric_on_the_first_eval_examples(model, tok):
    splits = Splits(train=[], val=[Example("Q:", " AB"), Example("Q:", " XY")],
                    test=[Example("Q:", " AB"), Example("Q:", " XY"), Example("Q:", " AB")])
    val = (5 * nll(model, "hit") + nll(model, "miss") + 2 * nll(model, "free")) / 8
    model.train()
    got = evaluate(model, tok, splits, config())
    assert got == {"val_loss": pytest.approx(val, rel=1e-5), "eval_exact_match": pytest.approx(2 / 3)}
    assert model.training  # the caller's mode is restored
    assert evaluate(model, tok, splits, config(eval_examples=2))["eval_exact_match"] == 0.5
    no_gen = config()
    no_gen.eval.generate = False
    assert set(evaluate(model, tok, splits, no_gen)) == {"val_loss"}
    assert final_evaluate(model, tok, splits, config()) == got  # not a published benchmark: the same scorer
    model.eval()


def test_scorers_route_each_metric_to_its_key(model, tok):
    test = [Example("Q:", "3 + 9 = 12\n#### 12", ), Example("Q:", "#### 13")]
    numbers = bigram_model(tok, {":": " ", " ": "1", "1": "2", "2": "</s>"})  # answers " 12"
    splits = Splits(train=[], val=test, test=test)
    assert evaluate(numbers, tok, splits, config(metric="final_number"))["eval_exact_match"] == 0.5
    choice = [Example("Q:", " AB", choices=(" XY", " AB"), label=1), Example("Q:", " AB", choices=(" AB", " X"), label=1)]
    splits = Splits(train=[], val=choice, test=choice)
    assert evaluate(model, tok, splits, config(metric="accuracy"))["eval_accuracy"] == 0.5
    assert {m: key for m, (key, _) in SCORERS.items()} == {
        "exact_match": "eval_exact_match", "accuracy": "eval_accuracy", "final_number": "eval_exact_match"}


def test_the_harness_scores_only_published_benchmarks_that_generate():
    assert uses_harness(config(name="boolq")) and uses_harness(config(name="gsm8k"))
    assert not uses_harness(config(name="capitalization"))
    off = config(name="boolq")
    off.eval.harness = False
    assert not uses_harness(off)
    off = config(name="boolq")
    off.eval.generate = False
    assert not uses_harness(off)
