"""Embedding rows against tokenizer ids (refused up front in one line, or resized on request), and
real tokenizers that need sentencepiece or tiktoken, built here from files a test writes."""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import compose, run_tiny
from ftlab.core.errors import ConfigError
from ftlab.models import build_model, build_tokenizer
from ftlab.preflight.model_checks import check_model_dir

BYTE_IDS = 259  # ByT5's 3 specials + 256 bytes


def save_tiny_llama(path: Path, vocab: int) -> Path:
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=vocab, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def model_cfg(path: Path, *overrides: str):
    return compose(f"model.name_or_path={path}", *overrides).model


@pytest.mark.parametrize("vocab", [300, 200])
def test_rows_that_differ_from_the_byte_tokenizer_are_refused_up_front(tmp_path: Path, vocab: int) -> None:
    d = save_tiny_llama(tmp_path / "m", vocab)
    m = model_cfg(d, "model.tokenizer=byte")
    want = ("model.tokenizer='byte' is invalid: a tokenizer with the model's 300 ids: the byte tokenizer has 259"
            if vocab > BYTE_IDS else "model.tokenizer='byte' is invalid: a tokenizer whose 259 ids fit the model's 200")
    with pytest.raises(ConfigError, match=want) as err:
        check_model_dir(m)  # the preflight: config.json only, no weights loaded
    assert "\n" not in str(err.value) and "model.resize_embeddings=true" in str(err.value)
    with pytest.raises(ConfigError, match="model.tokenizer"):
        build_model(m, build_tokenizer(m))


def test_resize_embeddings_resizes_to_the_tokenizer_with_one_line(tmp_path: Path, caplog) -> None:
    d = save_tiny_llama(tmp_path / "m", 300)
    m = model_cfg(d, "model.tokenizer=byte", "model.resize_embeddings=true")
    check_model_dir(m)
    with caplog.at_level(logging.WARNING, logger="ftlab"):
        model = build_model(m, build_tokenizer(m))
    assert model.get_input_embeddings().weight.shape[0] == BYTE_IDS
    assert model.get_output_embeddings().weight.shape[0] == BYTE_IDS
    assert "resized LlamaForCausalLM's embeddings from 300 to the tokenizer's 259 ids" in caplog.text


def sentencepiece_dir(tmp_path: Path) -> Path:
    """A tiny Llama with a sentencepiece tokenizer trained here (``tokenizer.model`` only: loading
    it needs the sentencepiece package)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the quick brown fox jumps over the lazy dog {i}" for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=60,
                                   model_type="bpe", minloglevel=2)
    d = save_tiny_llama(tmp_path / "sp_model", 60)
    shutil.copy(tmp_path / "sp.model", d / "tokenizer.model")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    return d


def tiktoken_dir(tmp_path: Path) -> Path:
    """A tiny Llama with a tiktoken BPE file written here (256 bytes + 4 merges + one special)."""
    d = save_tiny_llama(tmp_path / "tt_model", 261)
    tokens = [bytes([i]) for i in range(256)] + [b"th", b"the", b" t", b" the"]
    (d / "tiktoken.model").write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(tokens)))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
        "added_tokens_decoder": {"260": {"content": "<|endoftext|>", "special": True}}}))
    return d


@pytest.mark.parametrize("make, ids", [(sentencepiece_dir, 60), (tiktoken_dir, 261)])
def test_tokenizers_that_need_sentencepiece_or_tiktoken_load(tmp_path: Path, make, ids: int) -> None:
    m = model_cfg(make(tmp_path), "model.tokenizer=auto")
    check_model_dir(m)
    tok = build_tokenizer(m)
    assert len(tok) == ids
    encoded = tok("the lazy fox").input_ids
    assert tok.decode(encoded, skip_special_tokens=True).strip() == "the lazy fox"
    assert build_model(m, tok).get_input_embeddings().weight.shape[0] == ids


@pytest.mark.slow
def test_byte_tokenizer_on_a_larger_model_trains_and_evaluates_once_resized(tmp_path: Path) -> None:
    d = save_tiny_llama(tmp_path / "m", 300)
    _, metric = run_tiny(tmp_path / "run", f"model.name_or_path={d}", "model.tokenizer=byte",
                         "model.resize_embeddings=true")
    assert metric is not None and 0.0 <= metric <= 1.0  # generation decoded every id: no bytes error
