"""Base models and tokenizers: tiny ones from a config (no download), real ones from a path."""

from ftlab.models.build import build_model, build_tokenizer, count_parameters

__all__ = ["build_model", "build_tokenizer", "count_parameters"]
