"""Task metrics beyond plain exact match: multiple-choice log-likelihood accuracy (BoolQ,
HellaSwag) and final-number exact match (GSM8K).

Multiple choice is scored the way these benchmarks are usually reported for causal LMs: the model
never generates; each candidate continuation is scored by the summed log-probability of its
tokens after the prompt, and the best-scoring candidate is the prediction. Optional length
normalisation is lm-evaluation-harness's ``acc_norm``: divide by the candidate's length in
characters, without the " " that separates it from the prompt (tokenizer-independent), which
keeps long endings from being penalised merely for being long.

This is the fast training-time scorer (a sample of the test split, no lm-eval import); the final
numbers of BoolQ/HellaSwag/GSM8K come from lm-eval itself (``ftlab.harness``).
"""

from __future__ import annotations

import torch
from torchmetrics.aggregation import MeanMetric

from ftlab.core.errors import FtlabError
from ftlab.data.encoding import IGNORE_INDEX
from ftlab.data.inference import generate_answers
from ftlab.data.real_tasks import final_number
from ftlab.data.tasks import Example

#: what separates a prompt from its continuation (lm-eval's ``target_delimiter``)
TARGET_DELIMITER = " "


def choice_ids(tokenizer, prompt: str, choice: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt+choice and the number of choice tokens. Truncation drops the prompt's
    head (the question sits at its end) and always keeps one context token before the choice."""
    p = tokenizer.encode(prompt, add_special_tokens=False) or [tokenizer.eos_token_id]
    c = tokenizer.encode(choice, add_special_tokens=False)
    if not c:
        raise FtlabError(f"choice {choice!r} encodes to no tokens")
    c = c[:max_length - 1]
    p = p[-(max_length - len(c)):]
    return p + c, len(c)


@torch.no_grad()
def choice_log_likelihoods(model, tokenizer, examples: list[Example], max_length: int, batch_size: int,
                           length_normalize: bool = False) -> list[list[float]]:
    """Per example, the log-likelihood of each choice given the prompt (right-padded batches,
    so causal attention makes padding invisible to the scored positions)."""
    pairs: list[tuple[int, list[int], int, str]] = []
    for i, ex in enumerate(examples):
        if not ex.choices:
            raise FtlabError(f"task.metric='accuracy' needs multiple-choice examples; example {i} has no choices")
        for choice in ex.choices:
            ids, n = choice_ids(tokenizer, ex.prompt, choice, max_length)
            pairs.append((i, ids, n, choice))
    scores: list[list[float]] = [[] for _ in examples]
    device = next(model.parameters()).device
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        width = max(len(ids) for _, ids, _, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        targets = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, (_, ids, n, _) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
            targets[row, len(ids) - n:len(ids)] = torch.tensor(ids[-n:])
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = targets[:, 1:].to(device)
        picked = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != IGNORE_INDEX)
        for row, (i, _, _, choice) in enumerate(chunk):
            value = float(picked[row].sum())
            if length_normalize:
                value /= max(1, len(choice.removeprefix(TARGET_DELIMITER)))
            scores[i].append(value)
    return scores


def choice_accuracy(model, tokenizer, examples: list[Example], max_length: int, batch_size: int,
                    length_normalize: bool = False) -> float:
    """Fraction of examples whose labelled choice has the highest log-likelihood."""
    metric = MeanMetric()
    scores = choice_log_likelihoods(model, tokenizer, examples, max_length, batch_size, length_normalize)
    for ex, s in zip(examples, scores):
        metric.update(float(max(range(len(s)), key=s.__getitem__) == ex.label))
    return float(metric.compute())


def final_number_match(model, tokenizer, examples: list[Example], max_new_tokens: int, batch_size: int) -> float:
    """Greedy generation; correct when the final number equals the reference's ``#### N``."""
    metric = MeanMetric()
    preds = generate_answers(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size)
    for pred, ex in zip(preds, examples):
        got, want = final_number(pred), final_number(ex.answer)
        metric.update(float(got is not None and got == want))
    return float(metric.compute())
