"""Batches move to a device as one thing: every tensor inside, nothing else touched."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kinema.batch import Batch, to_device


@dataclass
class Part(Batch):
    mask: torch.Tensor


@dataclass
class Whole(Batch):
    codes: torch.Tensor
    captions: list[str]
    part: Part | None = None
    cond: dict = field(default_factory=dict)
    pairs: tuple = ()


def test_a_batch_moves_its_tensors_however_deep() -> None:
    whole = Whole(torch.zeros(2, 3, dtype=torch.long), ["a", "b"], Part(torch.ones(2, dtype=torch.bool)), {"frames": torch.ones(1), "name": "x"}, (torch.ones(1), 3))
    moved = whole.to("meta")  # a device with no memory: a tensor left behind stays on cpu
    assert isinstance(moved, Whole) and moved is not whole
    assert moved.codes.device.type == moved.part.mask.device.type == moved.cond["frames"].device.type == moved.pairs[0].device.type == "meta"
    assert moved.codes.dtype == torch.long and moved.part.mask.dtype == torch.bool
    assert moved.captions == ["a", "b"] and moved.cond["name"] == "x" and moved.pairs[1] == 3
    assert whole.codes.device.type == "cpu", "the original is not changed"
    assert Whole(torch.zeros(1), []).to("meta").part is None
    assert to_device([torch.zeros(1), "x"], "meta")[0].device.type == "meta"
