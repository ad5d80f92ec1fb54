"""Exceptions users meet, in a module that imports nothing heavy: the CLI catches them
without loading torch (`kinema --help` stays fast)."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint folder or file is missing, damaged, or does not fit the model."""
