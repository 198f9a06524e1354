"""A few optimiser steps on an adapted model, shared by the tests that then check its merge."""

from __future__ import annotations

import torch


def train_then_logits(adapted, ids: torch.Tensor, steps: int = 2, lr: float = 1e-2) -> torch.Tensor:
    """Train ``adapted`` (an ``ftlab.adapters`` result) ``steps`` AdamW steps on ``ids`` as labels,
    put it in eval mode and return its logits on ``ids``: what its merged model must reproduce."""
    opt = torch.optim.AdamW(adapted.param_groups(lr, 0.0)[0]["params"], lr=lr)
    for _ in range(steps):
        adapted.model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    adapted.model.eval()
    with torch.no_grad():
        return adapted.model(input_ids=ids).logits
