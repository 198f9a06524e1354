"""Chat templates: loss on every assistant turn (content and end-of-turn token) and nothing else,
for three real template styles written out here (Llama-3, Qwen2.5/ChatML, Mistral [INST] with the
system prompt moved into the last user turn), with a fast BPE tokenizer trained in the test.

The independent computation: for assistant turn i, render the conversation up to turn i with the
generation prompt, and up to turn i inclusive; the token difference is that turn's trained tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ftlab.core.errors import FtlabError
from ftlab.data.chat import render_conversation, render_examples
from ftlab.data.encoding import IGNORE_INDEX, encode_spans
from ftlab.data.task_base import Example

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 "
    "== 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + "
    "'<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if (message.role == 'user') "
    "or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}{{- '<|im_start|>' + "
    "message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}{%- if "
    "add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set "
    "loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{%- set "
    "user_messages = loop_messages | selectattr('role', 'equalto', 'user') | list %}{{- bos_token }}{%- for "
    "message in loop_messages %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- "
    "raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{%- endif %}{%- if message['role'] == 'user' %}{%- if (message == "
    "user_messages[-1]) and system_message is defined %}{{- '[INST] ' + system_message + '\n\n' + "
    "message['content'] + '[/INST]' }}{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif "
    "%}{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content']|trim + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
TEMPLATES = {"llama3": LLAMA3, "qwen2.5": QWEN25, "mistral": MISTRAL}
SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>", "[INST]", "[/INST]", "<s>", "</s>"]

CONVERSATION = (("system", "You answer in one word."), ("user", "What colour is the sky?"),
                ("assistant", "Blue."), ("user", "And grass, at noon?"), ("assistant", "Green, mostly."),
                ("user", "Snow?"), ("assistant", "White."))


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2/Llama-3 style) trained on a few sentences, with the three
    templates' special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [content for _, content in CONVERSATION] * 20 + ["system user assistant You are Qwen helpful"] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def _render(tokenizer, template, turns, generation=False) -> list[int]:
    msgs = [{"role": r, "content": c} for r, c in turns]
    text = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                         add_generation_prompt=generation)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _prefix_diffs(tokenizer, template, turns) -> list[list[int]]:
    """Each assistant turn's tokens: render(turns[:i+1]) minus render(turns[:i], generation prompt)."""
    out = []
    for i, (role, _) in enumerate(turns):
        if role == "assistant":
            before = _render(tokenizer, template, turns[:i], generation=True)
            after = _render(tokenizer, template, turns[:i + 1])
            assert after[:len(before)] == before  # the prefix render is a token prefix
            out.append(after[len(before):])
    return out


def _targets(enc) -> list[list[int]]:
    """Runs of consecutive target tokens."""
    runs, current = [], []
    for tid, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE_INDEX:
            assert label == tid
            current.append(tid)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("style", list(TEMPLATES))
def test_loss_covers_exactly_the_assistant_turns(style: str, tokenizer) -> None:
    template = TEMPLATES[style]
    ex = render_conversation(tokenizer, template, CONVERSATION, "t: row 1")
    enc = encode_spans(tokenizer, ex.text, ex.spans, 10_000)
    diffs = _prefix_diffs(tokenizer, template, CONVERSATION)
    if style == "mistral":
        # the full rendering puts the system prompt into the *last* user turn: the prefix renders
        # move it, so compare the trained tokens turn by turn (they sit after different prefixes)
        assert "You answer in one word.\n\nSnow?" in ex.text
    assert _targets(enc) == diffs
    trained = tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])
    for word in ("What colour", "grass", "Snow", "one word", "assistant", "user"):
        assert word not in trained  # system, user and role headers carry no loss
    # evaluation generates from the rendering before the last answer and compares with its content
    assert ex.prompt == ex.text[:ex.spans[-1][0]] and ex.answer == "White."


@pytest.mark.parametrize("style", list(TEMPLATES))
def test_last_turn_only(style: str, tokenizer) -> None:
    ex = render_conversation(tokenizer, TEMPLATES[style], CONVERSATION, "t: row 1", last_turn_only=True)
    enc = encode_spans(tokenizer, ex.text, ex.spans, 10_000)
    assert _targets(enc) == _prefix_diffs(tokenizer, TEMPLATES[style], CONVERSATION)[-1:]


def test_truncation_keeps_the_start(tokenizer) -> None:
    ex = render_conversation(tokenizer, LLAMA3, CONVERSATION, "t: row 1")
    full = encode_spans(tokenizer, ex.text, ex.spans, 10_000)
    cut = encode_spans(tokenizer, ex.text, ex.spans, 20)
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]


def test_template_file_and_template_errors(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "chatml.jinja"
    path.write_text(QWEN25, encoding="utf-8")
    cfg = OmegaConf.create({"chat_template": str(path), "last_turn_only": False})
    [ex] = render_examples([Example("", "", messages=CONVERSATION, where="f.jsonl: row 7")], tokenizer, cfg, "f")
    assert ex.text.startswith("<|im_start|>system\nYou answer") and ex.where == "f.jsonl: row 7"
    # a template that drops assistant turns renders no assistant tokens
    (tmp_path / "users.jinja").write_text("{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}"
                                          "{% endif %}{% endfor %}", encoding="utf-8")
    cfg = OmegaConf.create({"chat_template": str(tmp_path / "users.jinja")})
    with pytest.raises(FtlabError, match=r"f.jsonl: row 7: turn 2 \(assistant\).*no assistant tokens"):
        render_examples([Example("", "", messages=CONVERSATION, where="f.jsonl: row 7")], tokenizer, cfg, "f")
    # the template's own refusal (Mistral: roles must alternate) names the row
    bad = (("user", "a"), ("user", "b"), ("assistant", "c"))
    with pytest.raises(FtlabError, match="row 3: the chat template cannot render.*alternate"):
        render_conversation(tokenizer, MISTRAL, bad, "f.jsonl: row 3")
