"""Batches that move to a device as one thing.

A training batch is a dataclass of tensors beside captions, indices and nested parts (a
Phenaki `TokenBatch` carries its `Grounding` and `Negatives`). `Batch.to(device)` moves
every tensor in it, however deep, and keeps the rest as it is, so a batch class declares
its fields and nothing else; the trainer calls `.to` on whatever `get_batch` returns."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch

T = TypeVar("T")


def to_device(value: T, device: torch.device | str) -> T:
    """`value` with every tensor inside it (dataclass fields, dict values, list and tuple
    items) on `device`; anything else is returned as it is."""
    if torch.is_tensor(value):
        return value.to(device)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        moved = {f.name: to_device(getattr(value, f.name), device) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **moved)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(torch.is_tensor(v) or dataclasses.is_dataclass(v) for v in value):
        return type(value)(to_device(v, device) for v in value)
    return value


class Batch:
    """Mixin for a dataclass batch: `.to(device)` moves all its tensors (`to_device`)."""

    def to(self: T, device: torch.device | str) -> T:
        return to_device(self, device)


__all__ = ["Batch", "to_device"]
