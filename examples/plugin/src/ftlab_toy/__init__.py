"""Toy methods for ftlab, registered through entry points (see pyproject.toml)."""
