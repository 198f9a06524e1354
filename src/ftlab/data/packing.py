"""Padding-free batches: examples packed into fixed-length rows, attention kept inside each example.

``train.packing=true`` turns the training set into rows of ``train.pack_length`` tokens, each row
holding several whole examples (best-fit decreasing, so rows come out nearly full). Inside a row
the position ids restart at 0 for every example, and attention is block-diagonal: a token sees
only earlier tokens of its own example. The label of each example's first token is ignored, so no
example is trained to predict the next one. A packed batch therefore computes exactly the
per-token losses of its examples run one by one (``tests/data/test_data_packing.py``), on
``batch_size x pack_length`` token slots with almost no padding.

How the block-diagonal attention reaches the kernel depends on the model's attention
implementation: ``sdpa`` and ``eager`` get a prebuilt 4D mask (boolean for sdpa, additive for
eager), built on the device from the position ids, so transformers need not inspect the batch on
the host; every other implementation (``flash_attention_2``...) gets transformers' padding-free
varlen arguments (``cu_seq_lens_q/k`` over the flattened rows and ``max_length_q/k``, as
``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` produces them), computed here on the
host: transformers would otherwise only detect packing for a single flattened row, and would read
the position ids back from the device in every layer to find the boundaries.

A model with layers that do not attend to every earlier token (sliding windows: Mistral,
Starcoder2, Gemma-2/3's alternating local/global layers; chunked attention: Llama-4) needs each
layer's own pattern intersected with the packing: one block-diagonal mask would drop the window.
For those, ``sdpa``/``eager`` get no mask at all: transformers then finds the examples from the
restarting position ids and builds every layer type's mask with positions counted inside each
example (its packed-sequence path, ``masking_utils.find_packed_sequence_indices``), which costs
one read of the position ids per forward. Whether a given architecture computes exactly its
unpacked losses this way is checked on the model itself before training
(``ftlab.training.packing_check``); the architectures transformers ships are tested in
``tests/training/test_packing_architectures.py``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from ftlab.data.encoding import IGNORE_INDEX, Encoded

#: default row length in units of ``task.max_length``: long enough that best-fit packing fills
#: rows with several examples each (rows of one max-length example would pad like before)
DEFAULT_ROW_FACTOR = 4
#: attention implementations that take ftlab's prebuilt 4D block-diagonal mask
MASK_IMPLEMENTATIONS = ("sdpa", "eager")
#: the layer type of transformers configs that attends to every earlier token
FULL_ATTENTION = "full_attention"
#: config keys that bound how far back a layer attends (sliding window, chunk, GPT-Neo's local window)
WINDOW_KEYS = ("sliding_window", "attention_chunk_size", "window_size")


def attention_windows(config) -> list[int]:
    """The window sizes a transformers config sets (any of :data:`WINDOW_KEYS`), smallest first."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    found = (getattr(text, key, None) for key in WINDOW_KEYS)
    return sorted(w for w in found if isinstance(w, int) and not isinstance(w, bool) and w > 0)


def has_local_layers(config) -> bool:
    """Whether some layer of the model attends to less than every earlier token: its
    ``layer_types`` say so where the config has them, else any window size it sets."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    if types:
        return any(t != FULL_ATTENTION for t in types)
    return bool(attention_windows(text))


def pack_length(train_cfg, task_cfg) -> int:
    """Row length of packed batches: ``train.pack_length``, else ``DEFAULT_ROW_FACTOR x task.max_length``."""
    width = train_cfg.pack_length
    return int(width) if width is not None else DEFAULT_ROW_FACTOR * int(task_cfg.max_length)


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Best-fit decreasing: indices of ``lengths`` grouped into rows whose lengths sum to <= ``width``.

    Longest first, each example goes to the fullest row that still has room for it (a new row if
    none has). Deterministic (ties by index), so the rows are a pure function of the lengths.
    Every length must be <= ``width``.
    """
    too_long = [n for n in lengths if n > width]
    if too_long:
        raise ValueError(f"example of {max(too_long)} tokens does not fit a row of {width}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted: the best fit is the first >= n
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            rows.append([i])
            room, row = width - n, len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(i)
            room -= n
        if room > 0:
            bisect.insort(free, (room, row))
    return rows


def collate_packed(rows: list[list[Encoded]], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """``len(rows) x width`` tensors of packed rows. ``attention_mask`` marks real tokens (for
    counting); attention itself follows ``position_ids`` (see :func:`model_inputs`). The padding
    tail of a row is a segment of its own (positions restart), so it never joins an example."""
    b = len(rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at:at + n] = torch.tensor(e.labels)
            labels[r, at] = IGNORE_INDEX  # would be predicted from the previous example's last token
            pos[r, at:at + n] = torch.arange(n)
            mask[r, at:at + n] = 1
            at += n
        if at > width:
            raise ValueError(f"row {r} holds {at} tokens, more than the row length {width}")
        pos[r, at:] = torch.arange(width - at)
    starts = (pos.reshape(-1) == 0).nonzero().reshape(-1)  # every example and every padding tail
    cu = torch.cat([starts, torch.tensor([b * width])]).to(torch.int32)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos,
            "cu_seq_lens": cu, "max_length": int(cu.diff().max())}


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Which example of its row each token belongs to: a new one wherever the position does not
    continue by +1 (the rule transformers uses to detect packed sequences)."""
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """``[batch, 1, L, L]`` boolean: query i may attend key j iff j <= i in the same example."""
    seg = segment_ids(position_ids)
    width = position_ids.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=position_ids.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def model_inputs(batch: dict[str, torch.Tensor], attn_implementation: str | None,
                 dtype: torch.dtype = torch.float32, local_layers: bool = False) -> dict[str, torch.Tensor]:
    """Keyword arguments of the model's forward for a padded or a packed training batch;
    ``local_layers``: the model has windowed layers (:func:`has_local_layers`, see the module doc)."""
    if "position_ids" not in batch:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"]}
    out = {"input_ids": batch["input_ids"], "labels": batch["labels"], "position_ids": batch["position_ids"]}
    impl = attn_implementation or "sdpa"
    if impl in MASK_IMPLEMENTATIONS and local_layers:
        out["use_cache"] = False  # transformers detects packed rows only without a cache
    elif impl in MASK_IMPLEMENTATIONS:
        allowed = block_causal_mask(batch["position_ids"])
        if impl == "eager":  # eager adds the mask to the scores
            allowed = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        out["attention_mask"] = allowed
    else:  # flash-style kernels: varlen over the flattened rows, boundaries from the host
        out.update(cu_seq_lens_q=batch["cu_seq_lens"], cu_seq_lens_k=batch["cu_seq_lens"],
                   max_length_q=batch["max_length"], max_length_k=batch["max_length"])
    return out


def examples_in(batch: dict[str, torch.Tensor]) -> int:
    """Examples in a host batch: rows of a padded batch, example starts of a packed one."""
    if "position_ids" not in batch:
        return int(batch["input_ids"].shape[0])
    return int(((batch["position_ids"] == 0) & (batch["attention_mask"] == 1)).sum())


def padding_fraction(real_tokens: int, slots: int) -> float:
    """Share of the token slots the model processed that held padding."""
    return 1.0 - real_tokens / slots if slots else 0.0
