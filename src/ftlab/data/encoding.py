"""Turn examples into token tensors. The loss covers answer tokens (and the closing EOS) only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_example(tokenizer, prompt: str, answer: str, max_length: int) -> Encoded:
    """prompt+answer+EOS; labels mask the prompt. Truncation keeps the prompt's tail so the
    answer survives (a prompt longer than ``max_length`` keeps at least one answer token)."""
    p = tokenizer.encode(prompt, add_special_tokens=False)
    a = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    a = a[:max_length - 1] if len(a) >= max_length else a
    p = p[-(max_length - len(a)):] if len(p) + len(a) > max_length else p
    return Encoded(p + a, [IGNORE_INDEX] * len(p) + a)


def encode_spans(tokenizer, text: str, spans: tuple[tuple[int, int], ...], max_length: int) -> Encoded:
    """A rendered conversation: a token is a target iff its characters overlap a loss span. Fast
    tokenizers give each token's character offsets; slow ones (the byte tokenizer) encode the text
    piece by piece at the span edges. Truncation keeps the first ``max_length`` tokens (the
    conversation's start), so a cut conversation may lose its later answers."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        target = [any(a < e and b > s for s, e in spans) for a, b in enc["offset_mapping"]]
    else:
        ids, target, at = [], [], 0
        for s, e in [*spans, (len(text), len(text))]:
            for piece, hit in ((text[at:s], False), (text[s:e], True)):
                if piece:
                    part = tokenizer.encode(piece, add_special_tokens=False)
                    ids += part
                    target += [hit] * len(part)
            at = e
    ids, target = ids[:max_length], target[:max_length]
    return Encoded(ids, [t if hit else IGNORE_INDEX for t, hit in zip(ids, target)])


def encode(tokenizer, example, max_length: int) -> Encoded:
    """An :class:`~ftlab.data.task_base.Example` as the run trains on it: a rendered conversation
    by its loss spans, anything else as prompt + answer."""
    if example.spans is not None:
        return encode_spans(tokenizer, example.text, example.spans, max_length)
    return encode_example(tokenizer, example.prompt, example.answer, max_length)


def encode_text(tokenizer, text: str, max_length: int) -> Encoded:
    """Plain LM text (base-model corpus): every token is a target."""
    ids = (tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id])[:max_length]
    return Encoded(ids, list(ids))


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch (training and loss evaluation)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt batch for generation and choice scoring."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask
