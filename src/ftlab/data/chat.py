"""Conversations rendered with a chat template, and which characters of the rendering carry the loss.

The whole conversation is rendered once with the template (the tokenizer's own, or
``task.chat_template``, or :data:`BYTE_TEMPLATE` for the byte tokenizer of the tiny presets).
Each assistant turn's content is then found in that rendering, in turn order, and extended by the
end-of-turn text the template writes after an assistant turn (``<|eot_id|>``, ``<|im_end|>``,
``</s>``) and by any text it writes between the generation prompt and the content (Mistral's
space after ``[/INST]``): the model learns to answer and to stop. System and user text and the template's role
headers carry no loss. Searching the full rendering (instead of rendering prefixes and taking the
difference) stays right for templates that rewrite earlier turns (Mistral's puts the system
prompt into the last user turn; Qwen2.5's inserts a default system turn).

``task.last_turn_only=true`` keeps the loss on the last assistant turn only. The rendered prompt
of an :class:`Example` is the text before the last assistant turn (what generation continues
from); its ``answer`` is that turn's content (what exact match compares against).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import ByT5Tokenizer

from ftlab.core.errors import ConfigError, FtlabError
from ftlab.data.task_base import Example, Splits

#: For the byte tokenizer (no template of its own): a role header per turn, assistant turns end
#: in EOS, the others in a newline. No whitespace touches EOS: the byte tokenizer's ``</s>``
#: swallows the whitespace next to it, so a newline there would vanish on encoding.
BYTE_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + (m['content'] | trim) }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def chat_template(tokenizer, template_path: str | None) -> str:
    """The Jinja template conversations are rendered with: ``task.chat_template`` (a file), else
    the tokenizer's own, else :data:`BYTE_TEMPLATE` for the byte tokenizer."""
    if template_path:
        path = Path(template_path)
        if not path.is_file():
            raise ConfigError("task.chat_template", template_path, "an existing Jinja template file")
        return path.read_text(encoding="utf-8")
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own:
        return own
    if isinstance(tokenizer, ByT5Tokenizer):
        return BYTE_TEMPLATE
    raise ConfigError("task.chat_template", template_path,
                      "a Jinja template file: the model's tokenizer has no chat template of its own")


def _render(tokenizer, template: str, turns, where: str, *, generation: bool = False) -> str:
    messages = [{"role": role, "content": content} for role, content in turns]
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as err:  # noqa: BLE001 - a template's own refusal (raise_exception) is the row's error
        raise FtlabError(f"{where}: the chat template cannot render this conversation "
                         f"({type(err).__name__}: {err})") from err


def _around(tokenizer, template: str, turns, i: int, where: str) -> tuple[str, str]:
    """What the template writes around assistant turn ``i``'s content beyond the generation
    prompt: before it (Mistral's space after ``[/INST]``) and after it (the end-of-turn text)."""
    text = _render(tokenizer, template, turns[:i + 1], where)
    content = turns[i][1].strip()
    pos = text.rfind(content)
    if pos < 0:
        return "", ""
    prompt = _render(tokenizer, template, turns[:i], where, generation=True)
    lead = text[len(prompt):pos] if text.startswith(prompt) and len(prompt) <= pos else ""
    return lead, text[pos + len(content):]


def render_conversation(tokenizer, template: str, turns: tuple[tuple[str, str], ...], where: str,
                        last_turn_only: bool = False) -> Example:
    """An :class:`Example` with ``text`` (the rendering up to the end of the last assistant turn),
    ``spans`` (the loss-carrying character ranges), ``prompt`` and ``answer`` (for evaluation)."""
    last = max(i for i, (role, content) in enumerate(turns) if role == "assistant" and content.strip())
    turns = turns[:last + 1]  # user turns after the last answer train nothing
    full = _render(tokenizer, template, turns, where)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, (role, content) in enumerate(turns):
        needle = content.strip()
        if role == "system" or not needle:
            continue  # a system prompt's place depends on the template (Mistral moves it)
        start = full.find(needle, cursor)
        if start < 0:
            raise FtlabError(f"{where}: turn {i} ({role}) is not in the chat template's rendering: the "
                             "template renders no assistant tokens for it (check task.chat_template)")
        end = start + len(needle)
        cursor = end
        if role != "assistant":
            continue
        lead, tail = _around(tokenizer, template, turns, i, where)
        if lead and full[:start].endswith(lead):
            start -= len(lead)
        keep = 0
        while keep < len(tail) and end + keep < len(full) and full[end + keep] == tail[keep]:
            keep += 1
        spans.append((start, end + keep))
        cursor = end + keep
    text = full[:spans[-1][1]]
    if last_turn_only:
        spans = spans[-1:]
    prompt = text[:spans[-1][0]]
    return Example(prompt, turns[last][1].strip(), messages=turns, text=text, spans=tuple(spans))


def render_examples(examples: list[Example], tokenizer, task_cfg: Any, source: str) -> list[Example]:
    """Conversations rendered (``text``/``spans``/``prompt``/``answer`` filled); others unchanged."""
    if not any(ex.messages for ex in examples):
        return examples
    template = chat_template(tokenizer, task_cfg.get("chat_template"))
    last_only = bool(task_cfg.get("last_turn_only", False))
    out = []
    for n, ex in enumerate(examples, start=1):
        if ex.messages is None or ex.text is not None:
            out.append(ex)
            continue
        where = ex.where or f"{source}: conversation {n}"
        out.append(replace(render_conversation(tokenizer, template, ex.messages, where, last_only), where=where))
    return out


def render_splits(splits: Splits, tokenizer, task_cfg: Any) -> Splits:
    """:func:`render_examples` on each split (a no-op for prompt/answer data)."""
    src = task_cfg.get("path") or task_cfg.get("name")
    return Splits(*(render_examples(part, tokenizer, task_cfg, f"{src} ({name} split)")
                    for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test))))
