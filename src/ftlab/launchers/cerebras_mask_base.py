"""Mask a frozen base before ``cszoo fit``: run in the ModelZoo environment, not in ftlab's.

Why this step exists: ModelZoo 2.10 cannot keep a ``sparsity`` block's masks on weights that get no
gradient. Its ``SparsityCallback`` always calls ``optimizer.apply(sparsity)``, its optimiser holds
only the parameters that require gradients (``configure_param_groups``), and cerebras.pytorch's
``SparsityAlgorithm.sparsify_optimizer`` then stops the first step with "optimizer.apply(sparsity)
was called but model.apply(sparsity) was not" (``cerebras/pytorch/sparse/base.py``). Masking a
frozen weight needs no optimiser at all: a weight that never changes keeps its zeros, and
cerebras.pytorch's own representation of a pre-pruned checkpoint is exactly that, zeros in the
weights (its ``from_zeros`` init method). So a run whose base is frozen (LoRA, masked LoRA) gets the
mask here, once, on the base checkpoint, and trains with no ``sparsity`` block.

The mask is cerebras.pytorch's own: the same ``init_method`` (``topk``: lowest magnitude per tensor;
``random``), the same level and the same ``param_filter`` globs (matched with cerebras.pytorch's
``convert_glob_to_regex``, as its sparsity ``Group`` matches them) that the trainer YAML's
``sparsity`` block would have used. Only torch, PyYAML and cerebras.pytorch are imported: ftlab is
not installed in the ModelZoo environment.

Usage: ``python cerebras_mask_base.py SPEC.yaml BASE.mdl OUT_DIR``; writes ``OUT_DIR/masked_base.mdl``
and ``OUT_DIR/masked_base.json`` (per masked tensor: its fraction of zeros).
"""

import json
import sys
from pathlib import Path

import cerebras.pytorch as cstorch
import torch
import yaml
from cerebras.pytorch.sparse.init import make_init_method
from cerebras.pytorch.utils.utils import convert_glob_to_regex

MASKED_FILE = "masked_base.mdl"
REPORT_FILE = "masked_base.json"


def mask_state(state: dict, spec: dict) -> dict[str, float]:
    """Zero the pruned entries of every tensor of ``state`` that the spec's globs match, in place;
    returns ``{name: fraction of zeros}`` of the masked tensors."""
    patterns = [convert_glob_to_regex(g) for g in spec["param_filter"]]
    init = make_init_method(spec["init_method"])
    level = torch.tensor(float(spec["sparsity"]))
    torch.manual_seed(int(spec.get("seed", 0)))  # the random init method draws from torch's generator
    zeros = {}
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or not any(p.match(name) for p in patterns):
            continue
        keep = init(tensor, sparsity=level)
        state[name] = torch.where(keep, tensor, torch.zeros_like(tensor))
        zeros[name] = float((state[name] == 0).float().mean())
    unmatched = [g for g, p in zip(spec["param_filter"], patterns) if not any(p.match(n) for n in zeros)]
    if unmatched:
        raise SystemExit(f"ftlab: error: param_filter globs {unmatched} match no tensor of the base checkpoint")
    return zeros


def main(spec_path: str, base: str, out_dir: str) -> int:
    spec = yaml.safe_load(Path(spec_path).read_text())
    checkpoint = cstorch.load(base, map_location="cpu")
    state = checkpoint["model"] if "model" in checkpoint else checkpoint
    zeros = mask_state(state, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cstorch.save({"model": state} if "model" in checkpoint else state, str(out / MASKED_FILE))
    (out / REPORT_FILE).write_text(json.dumps({"spec": spec, "base": base, "zeros": zeros}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
