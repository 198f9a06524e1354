"""Sparse bases: importance scores, pruning masks, mask files, checks, statistics.

Pure tensor code (no Lightning). The recipe enters once, through :func:`sparse_base`
(:mod:`ftlab.sparsity.pipeline`: prepare, attach, finish); the mask itself is one function,
:func:`compute_pruned` (masks, SparseGPT weights, OWL levels), free of output paths so a cache can wrap it.
"""

from ftlab.sparsity.apply import apply_masks_
from ftlab.sparsity.check import validate_weights
from ftlab.sparsity.compute import MaskSpec, compute_masks, masks_from_scores
from ftlab.sparsity.config import sparsity_enabled, validate_sparsity
from ftlab.sparsity.io import load_masks, save_masks

__all__ = ["MaskSpec", "apply_masks_", "compute_masks", "load_masks", "masks_from_scores", "save_masks",
           "sparsity_enabled", "validate_sparsity", "validate_weights"]
