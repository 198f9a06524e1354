"""The two passes every scorer makes over examples: teacher-forced answer loss and greedy
generation. Kept below both the training-time scorers (``ftlab.evaluation.metrics``, ``ftlab.evaluation.scoring``) and
the sparse pipeline, which all need them without needing each other."""

from __future__ import annotations

import torch
from torchmetrics.aggregation import MeanMetric

from ftlab.data.encoding import IGNORE_INDEX, collate, encode, left_pad
from ftlab.data.tasks import Example


def batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def loss_on(model, tokenizer, examples: list[Example], max_length: int, batch_size: int) -> float:
    """Mean NLL per answer token (teacher forcing)."""
    metric = MeanMetric()
    enc = [encode(tokenizer, e, max_length) for e in examples]
    device = next(model.parameters()).device
    for chunk in batches(enc, batch_size):
        b = collate(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        labels = b["labels"][:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                                ignore_index=IGNORE_INDEX, reduction="none")
        metric.update(nll[labels.flatten() != IGNORE_INDEX].cpu())
    return float(metric.compute())


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy decoding of each prompt's continuation, cut at EOS."""
    device = next(model.parameters()).device
    out: list[str] = []
    for chunk in batches(prompts, batch_size):
        ids, mask = left_pad([tokenizer.encode(p, add_special_tokens=False) for p in chunk], tokenizer.pad_token_id)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in gen[:, ids.shape[1]:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id)]
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out
