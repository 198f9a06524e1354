"""``ftlab.evaluation.scoring``: choice log-likelihoods equal hand-computed sums on a constructed bigram Llama
(with and without lm-eval's per-character length normalisation), truncation of prompt+choice,
the accuracy that follows, final-number match, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch

from bigram_model import bigram_model, byte_tokenizer, nll, scale
from ftlab.core.errors import FtlabError
from ftlab.data.tasks import Example
from ftlab.evaluation.scoring import choice_accuracy, choice_ids, choice_log_likelihoods, final_number_match
from tolerance import nll_rounding

pytestmark = pytest.mark.numerical

TABLE = {":": " ", " ": "A", "A": "B", "B": "C"}


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return bigram_model(tok, TABLE)


def test_choice_log_likelihoods_are_the_summed_token_log_probs(model, tok):
    hit, miss, free = (-nll(model, k) for k in ("hit", "miss", "free"))
    ex = [Example("Q:", "", choices=(" AB", " XYZ", " ABCD"), label=0)]
    want = [3 * hit, hit + miss + 2 * free, 4 * hit + free]  # ' ' A B | ' ' X Y Z | ' ' A B C D
    # a sum of up to 5 float32 token NLLs, each a softmax over the vocabulary at logits of size scale
    tol = 5 * nll_rounding(torch.float32, model.config.vocab_size, scale(model))
    got = choice_log_likelihoods(model, tok, ex, max_length=32, batch_size=2)
    assert got == [pytest.approx(want, abs=tol)]
    norm = choice_log_likelihoods(model, tok, ex, max_length=32, batch_size=3, length_normalize=True)
    # divided by the characters of the choice without the " " delimiter
    assert norm == [pytest.approx([want[0] / 2, want[1] / 3, want[2] / 4], abs=tol)]


def test_length_normalisation_can_change_the_pick(model, tok):
    """Both choices pay the miss of "X"; the long one also pays two free guesses, but spread over 7
    characters its per-character cost is lower: unnormalised " X" wins, normalised the long one."""
    ex = [Example("Q:", "", choices=(" X", " XABCABC"), label=1)]
    raw = choice_log_likelihoods(model, tok, ex, 32, 4)[0]
    norm = choice_log_likelihoods(model, tok, ex, 32, 4, length_normalize=True)[0]
    assert raw[0] > raw[1] and norm[1] > norm[0]
    assert choice_accuracy(model, tok, ex, 32, 4) == 0.0
    assert choice_accuracy(model, tok, ex, 32, 4, length_normalize=True) == 1.0


def test_choice_ids_truncate_the_prompt_head_and_keep_one_context_token(tok):
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    assert choice_ids(tok, "abcdef", " XY", max_length=6) == (enc("def XY"), 3)
    assert choice_ids(tok, "abcdef", " XY", max_length=20) == (enc("abcdef XY"), 3)
    assert choice_ids(tok, "abcdef", " XY", max_length=3) == (enc("f X"), 2)  # the choice is cut, one context kept
    assert choice_ids(tok, "", " X", max_length=8) == ([tok.eos_token_id, *enc(" X")], 2)  # empty prompt: EOS
    with pytest.raises(FtlabError, match="encodes to no tokens"):
        choice_ids(tok, "Q:", "", max_length=8)


def test_accuracy_counts_the_labelled_choice_winning(model, tok):
    ex = [Example("Q:", "", choices=(" XY", " AB"), label=1), Example("Q:", "", choices=(" AB", " XY"), label=0),
          Example("Q:", "", choices=(" AB", " XY"), label=1)]
    assert choice_accuracy(model, tok, ex, 32, batch_size=5) == pytest.approx(2 / 3)
    with pytest.raises(FtlabError, match="example 1 has no choices"):
        choice_accuracy(model, tok, [ex[0], Example("Q:", " AB")], 32, 2)


def test_final_number_match_compares_the_committed_numbers(tok):
    model = bigram_model(tok, {":": " ", " ": "4", "4": "2", "2": "</s>"})  # answers " 42"
    ex = [Example("Q:", "6 * 7 = 42\n#### 42"), Example("Q:", "#### 42.0"), Example("Q:", "#### 24"),
          Example("Q:", "the answer is 42")]
    assert final_number_match(model, tok, ex, max_new_tokens=5, batch_size=2) == pytest.approx(3 / 4)
