"""Before a packed run trains: does this model compute each example's own losses in a packed row?

``train.packing=true`` promises exactly the per-token losses of each example run alone. Whether
an architecture keeps that promise depends on code ftlab does not own: how its attention takes a
mask (Bloom's ALiBi builds its bias from a 2-D padding mask and breaks on a 4-D one), whether it
reads ``position_ids`` at all (RoBERTa-style models count positions from the padding token), and
whether it has state that runs across the row (Mamba and other recurrent layers). Rules per
architecture would go stale with every transformers release, so the model itself is asked: two
short random examples (longer than its smallest attention window, where that fits the task's
``max_length``, so a window that the packed mask dropped shows) are run packed in one row and
alone, and a packed run is refused in one line unless their per-token losses agree to
:data:`TOLERANCE`. It costs three forward passes of a few dozen tokens, in eval mode, without
gradients, before training starts.
"""

from __future__ import annotations

import torch
from torch import nn

from ftlab.core.errors import fail
from ftlab.data.encoding import Encoded
from ftlab.data.packing import attention_windows, collate_packed, has_local_layers, model_inputs

#: largest per-token NLL difference (nats) accepted between packed and alone, by weight dtype:
#: float32 agrees to rounding (< 1e-6 on every architecture that packs); half precision rounds
#: each kernel's sums differently for rows of other lengths
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-5, torch.bfloat16: 5e-2, torch.float16: 5e-2}
#: example length of the check when the model sets no window shorter than the task's examples
DEFAULT_LENGTH = 16
#: padding slots at the end of the packed row (a segment of their own, like a real packed row's tail)
TAIL = 3


def probe_lengths(config, max_length: int) -> tuple[int, int]:
    """Two example lengths, unequal, past the model's smallest window where ``max_length`` allows."""
    windows = attention_windows(config)
    n = windows[0] + 4 if windows else DEFAULT_LENGTH
    n = max(4, min(n, int(max_length)))
    return n, n - 1


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """NLL of each next token of one example (``logits`` and ``ids`` of that example only)."""
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    return -logp.gather(-1, ids[1:, None])[:, 0]


def example_tokens(n: int, vocab: int, config, gen: torch.Generator) -> torch.Tensor:
    """``n`` random token ids of the vocabulary, none of them the padding id (a real example has none;
    some models derive positions from it)."""
    ids = torch.randint(0, vocab, (n,), generator=gen)
    pad = getattr(config, "pad_token_id", None)
    return torch.where(ids == pad, (ids + 1) % vocab, ids) if isinstance(pad, int) else ids


def packing_difference(model: nn.Module, lengths: tuple[int, ...], seed: int = 0) -> float:
    """Largest per-token NLL difference between examples of ``lengths`` run packed in one row (the
    way training runs them) and each run alone (as a padded batch of one). Raises what the model
    raises."""
    config = model.config
    weight = model.get_input_embeddings().weight
    vocab = weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    examples = [example_tokens(n, vocab, config, gen) for n in lengths]
    width = sum(lengths) + TAIL
    batch = collate_packed([[Encoded(e.tolist(), e.tolist()) for e in examples]], width, pad_id=0)
    batch = {k: v.to(weight.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    impl = getattr(config, "_attn_implementation", None)
    inputs = model_inputs(batch, impl, weight.dtype, has_local_layers(config))  # with labels, as training
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(**inputs).logits[0]
            worst, at = 0.0, 0
            for e in examples:
                ids = e.to(weight.device)[None]
                alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
                diff = (token_nll(packed[at:at + len(e)], ids[0]) - token_nll(alone, ids[0])).abs().max()
                worst, at = max(worst, float(diff)), at + len(e)
    finally:
        model.train(was_training)
    return worst


def check_packing(model: nn.Module, max_length: int) -> None:
    """Refuse ``train.packing=true`` in one line unless ``model`` computes each example's own
    losses in a packed row (see the module doc). A model on the meta device is not checked."""
    weight = model.get_input_embeddings().weight
    if weight.device.type == "meta":
        return
    name = type(model).__name__
    impl = getattr(model.config, "_attn_implementation", None)
    try:
        diff = packing_difference(model, probe_lengths(model.config, max_length))
    except Exception as err:  # noqa: BLE001 - any failure of the model's forward on a packed row
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:160]
        fail("train.packing", True, f"false for {name} ({impl} attention): its forward fails on a packed "
             f"row ({type(err).__name__}: {reason})")
    tol = TOLERANCE.get(weight.dtype, TOLERANCE[torch.bfloat16])
    if not diff <= tol:
        fail("train.packing", True, f"false for {name} ({impl} attention): packed rows change its per-token "
             f"losses by up to {diff:.2g} (allowed {tol:g}); its attention or positions do not stay inside "
             "each example")
