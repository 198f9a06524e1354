"""Evaluation shared by trained and control runs: val loss and the task metric on the test split.

Metrics accumulate in torchmetrics ``MeanMetric`` s (token-weighted loss, per-example scores),
so the same code gives the same numbers under DDP sync or single process.
"""

from __future__ import annotations

import torch
from torchmetrics.aggregation import MeanMetric

from ftlab.data.encoding import IGNORE_INDEX, collate, encode_example, left_pad
from ftlab.data.tasks import Example
from ftlab.scoring import choice_accuracy, final_number_match


def normalize_answer(text: str) -> str:
    return " ".join(text.strip().split())


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def loss_on(model, tokenizer, examples: list[Example], max_length: int, batch_size: int) -> float:
    """Mean NLL per answer token (teacher forcing)."""
    metric = MeanMetric()
    enc = [encode_example(tokenizer, e.prompt, e.answer, max_length) for e in examples]
    device = next(model.parameters()).device
    for chunk in _batches(enc, batch_size):
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
    for chunk in _batches(prompts, batch_size):
        ids, mask = left_pad([tokenizer.encode(p, add_special_tokens=False) for p in chunk], tokenizer.pad_token_id)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in gen[:, ids.shape[1]:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id)]
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


def exact_match(model, tokenizer, examples: list[Example], max_new_tokens: int, batch_size: int) -> float:
    metric = MeanMetric()
    preds = generate_answers(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size)
    for pred, ex in zip(preds, examples):
        metric.update(float(normalize_answer(pred) == normalize_answer(ex.answer)))
    return float(metric.compute())


#: task.metric -> (metrics.json key, scorer(model, tokenizer, examples, cfg))
SCORERS = {
    "exact_match": ("eval_exact_match",
                    lambda model, tok, ex, cfg: exact_match(model, tok, ex, cfg.task.max_new_tokens,
                                                            cfg.train.eval_batch_size)),
    "accuracy": ("eval_accuracy",
                 lambda model, tok, ex, cfg: choice_accuracy(
                     model, tok, ex, cfg.task.max_length, cfg.train.eval_batch_size,
                     bool((cfg.task.options or {}).get("length_normalize", False)))),
    "final_number": ("eval_exact_match",
                     lambda model, tok, ex, cfg: final_number_match(model, tok, ex, cfg.task.max_new_tokens,
                                                                    cfg.train.eval_batch_size)),
}


def evaluate(model, tokenizer, splits, cfg) -> dict[str, float]:
    """``val_loss`` on the val split and the task metric on (up to ``eval_examples`` of) the test split."""
    was_training = model.training
    model.eval()
    try:
        metrics = {"val_loss": loss_on(model, tokenizer, splits.val, cfg.task.max_length, cfg.train.eval_batch_size)}
        if cfg.eval.generate:
            key, scorer = SCORERS[cfg.task.metric]
            test = splits.test[:cfg.task.eval_examples] if cfg.task.eval_examples else splits.test
            metrics[key] = scorer(model, tokenizer, test, cfg)
    finally:
        model.train(was_training)
    return metrics


__all__ = ["evaluate", "exact_match", "generate_answers", "loss_on", "normalize_answer", "SCORERS"]
