"""The two passes under every scorer (``ftlab.data.inference``): teacher-forced answer loss and greedy
generation, on a constructed bigram Llama whose numbers are known by hand, and on a random tiny
Llama against a hand-written greedy loop."""

from __future__ import annotations

import pytest
import torch

from bigram_model import bigram_model, byte_tokenizer, nll, scale
from conftest import compose
from ftlab.data.inference import batches, generate_answers, loss_on
from ftlab.data.tasks import Example
from ftlab.models import build_model
from tolerance import nll_rounding

pytestmark = pytest.mark.numerical

TABLE = {":": " ", " ": "A", "A": "B", "B": "</s>"}


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_generation_follows_the_table_and_stops_at_eos(tok):
    model = bigram_model(tok, {**TABLE, "</s>": "Z"})  # after EOS the table goes on: the answer must not
    prompts = ["Q1:", "a much longer prompt:", "Answer:"]
    assert generate_answers(model, tok, prompts, 8, batch_size=2) == [" AB"] * 3  # left padding is harmless
    assert generate_answers(model, tok, prompts, 2, batch_size=3) == [" A"] * 3  # cut at max_new_tokens
    cycle = bigram_model(tok, {**TABLE, "B": " "})  # never emits EOS
    assert generate_answers(cycle, tok, ["Q:"], 7, batch_size=1) == [" AB AB "]


def test_greedy_generation_equals_a_hand_written_greedy_loop():
    cfg = compose()
    tok = byte_tokenizer()
    model = build_model(cfg.model, tok, seed=3).eval()
    prompts = ["Capitalize: ab cd\nAnswer:", "Capitalize: xyz\nAnswer:"]
    want = []
    with torch.no_grad():
        for p in prompts:
            ids = tok.encode(p, add_special_tokens=False)
            out: list[int] = []
            for _ in range(6):  # no cache, no padding: the full sequence every step
                nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                out.append(nxt)
            want.append(tok.decode(out, skip_special_tokens=True))
    assert generate_answers(model, tok, prompts, 6, batch_size=1) == want


def test_loss_is_the_token_weighted_answer_nll(tok):
    model = bigram_model(tok, TABLE)
    examples = [Example("Q:", " AB"),  # ' ' A B </s>: 4 hits
                Example("Q:", " XY"),  # ' ' hit, X miss, Y and </s> after unknown tokens: free
                Example("Q:", " ABABAB")]  # B->A twice a miss, the other 6 hits
    want = (11 * nll(model, "hit") + 3 * nll(model, "miss") + 2 * nll(model, "free")) / 16
    # each token's NLL is a float32 softmax over the vocabulary at logits of size scale(model)
    tol = nll_rounding(torch.float32, model.config.vocab_size, scale(model))
    assert loss_on(model, tok, examples, max_length=32, batch_size=1) == pytest.approx(want, abs=tol)
    assert loss_on(model, tok, examples, max_length=32, batch_size=3) == pytest.approx(want, abs=tol)
    # the prompt is never scored: a prompt full of misses changes nothing (a scored miss adds ~scale)
    unscored = loss_on(model, tok, [Example("ABBA QQ:", " AB")], 32, 1)
    assert unscored == pytest.approx(nll(model, "hit"), abs=tol)
    assert unscored == pytest.approx(loss_on(model, tok, [Example("Q:", " AB")], 32, 1), abs=tol)
    assert tol < nll(model, "miss") / 100  # the bound still tells a scored prompt from an unscored one


def test_batches_cover_every_item_in_order():
    assert list(batches(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches([], 4)) == []
