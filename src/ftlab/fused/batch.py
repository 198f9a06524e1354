"""The concatenated batch of a fused step and the per-trial losses over it.

Trials' micro-batches are stacked row-wise; padded batches are right-padded to the widest (pad
id, ``labels=-100``, ``attention_mask=0``: the padding a solo batch already has, so a trial's real
tokens see the same attention and labels); packed rows share ``train.pack_length`` and their
``cu_seq_lens`` are offset. Each trial's loss is transformers' causal-LM loss (the one its model
computes in a solo run) over its own rows, i.e. the mean over that trial's answer tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.loss.loss_utils import ForCausalLMLoss

from ftlab.data.encoding import IGNORE_INDEX

PADDED_KEYS = ("input_ids", "labels", "attention_mask")


def concat_batches(batches: list[dict[str, torch.Tensor] | None],
                   pad_id: int) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """One batch of every trial's rows, in trial order; ``None`` = that trial has no rows this
    step (it left the group). Returns the batch, the rows and the own width of each trial."""
    present = [b for b in batches if b is not None]
    if not present:
        raise ValueError("no trial has a batch")
    rows = [0 if b is None else int(b["input_ids"].shape[0]) for b in batches]
    widths = [0 if b is None else int(b["input_ids"].shape[1]) for b in batches]
    if "position_ids" in present[0]:
        return _concat_packed(present), rows, widths
    width = max(int(b["input_ids"].shape[1]) for b in present)
    fill = {"input_ids": pad_id, "labels": IGNORE_INDEX, "attention_mask": 0}
    out = {key: torch.cat([F.pad(b[key], (0, width - b[key].shape[1]), value=fill[key]) for b in present])
           for key in PADDED_KEYS}
    return out, rows, widths


def _concat_packed(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    widths = {int(b["input_ids"].shape[1]) for b in batches}
    if len(widths) != 1:
        raise ValueError(f"packed rows of one fused step must share train.pack_length, got widths {sorted(widths)}")
    out = {key: torch.cat([b[key] for b in batches]) for key in (*PADDED_KEYS, "position_ids")}
    cu, offset = [], 0
    for b in batches:
        cu.append(b["cu_seq_lens"][:-1] + offset)
        offset += int(b["cu_seq_lens"][-1])
    out["cu_seq_lens"] = torch.cat([*cu, torch.tensor([offset], dtype=torch.int32)]).to(torch.int32)
    out["max_length"] = max(int(b["max_length"]) for b in batches)
    return out


def trial_losses(logits: torch.Tensor, labels: torch.Tensor, rows: list[int]) -> list[torch.Tensor | None]:
    """Per trial: the causal-LM loss of its own rows (``None`` for a trial without rows)."""
    present = [n for n in rows if n]
    # split: one gradient block per trial, concatenated once in the backward (a slice per trial
    # would write each into a zero tensor of all trials' logits)
    parts = iter(zip(logits.split(present), labels.split(present)))
    out: list[torch.Tensor | None] = []
    for n in rows:
        if n == 0:
            out.append(None)
            continue
        part, lab = next(parts)
        out.append(ForCausalLMLoss(part, lab, vocab_size=part.shape[-1]))
    return out
