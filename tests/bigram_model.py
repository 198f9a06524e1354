"""A real transformers Llama whose weights are constructed so that it is a known bigram table:
the token after ``t`` is ``NEXT[t]`` with logit ``scale``, every other logit 0 (a token with no
entry: all logits 0, a uniform guess). Scorers run on it give numbers a test can compute by hand.

How: the embedding is one-hot (hidden size >= vocabulary), every block's output projections are
zero (the residual stream keeps the one-hot embedding), RMSNorm turns it into ``s * onehot`` with
``s = 1 / sqrt(1 / H + eps)``, and ``lm_head[v, t] = 1`` iff ``NEXT[t] == v``.
"""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab.models import build_tokenizer

HIDDEN = 288  # >= 259 byte-level tokens, divisible by the heads


def byte_tokenizer():
    from types import SimpleNamespace

    return build_tokenizer(SimpleNamespace(tokenizer="byte", name_or_path=None))


def bigram_model(tokenizer, pairs: dict[str, str]) -> LlamaForCausalLM:
    """``pairs`` maps a character to the one that follows it (``"</s>"`` for EOS)."""
    vocab = len(tokenizer)
    config = LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        for a, b in pairs.items():
            model.lm_head.weight[token(tokenizer, b), token(tokenizer, a)] = 1.0
    return model


def token(tokenizer, ch: str) -> int:
    if ch == tokenizer.eos_token:
        return tokenizer.eos_token_id
    ids = tokenizer.encode(ch, add_special_tokens=False)
    assert len(ids) == 1, ch
    return ids[0]


def scale(model: LlamaForCausalLM) -> float:
    """The logit of the table's next token (RMSNorm of a one-hot vector)."""
    return 1.0 / math.sqrt(1.0 / model.config.hidden_size + model.config.rms_norm_eps)


def nll(model: LlamaForCausalLM, kind: str) -> float:
    """Hand-computed NLL of a target that is the table's next token (``"hit"``), another token
    after a token that has an entry (``"miss"``), or any token after one without (``"free"``)."""
    s, v = scale(model), model.config.vocab_size
    if kind == "free":
        return math.log(v)
    lse = math.log(math.exp(s) + v - 1)
    return lse - s if kind == "hit" else lse
