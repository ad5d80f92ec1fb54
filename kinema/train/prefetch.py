"""Micro-batches made ahead of the training step by worker processes.

Data is addressed by index (`get_batch(i)`), and on a CPU the step and the batch share the
same cores, so making batch i inside the loop costs nothing extra. On a GPU a step takes
milliseconds while one CPU core renders and tokenizes a batch in a second: the GPU waits.
With `workers` > 0 a torch DataLoader calls `get_batch` in that many processes, a few
indices ahead, and hands the batches over in index order. The order is the same as without
workers, so a run does not depend on how many there are, and `--resume` still starts at the
saved data position.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class IndexedBatches(Dataset):
    """`get_batch` as a map-style dataset: item i is micro-batch i."""

    def __init__(self, get_batch: Callable[[int], Any]):
        self.get_batch = get_batch

    def __getitem__(self, index: int) -> Any:
        return self.get_batch(index)


def _as_is(batch: Any) -> Any:
    return batch


def batch_stream(get_batch: Callable[[int], Any], start: int, stop: int, workers: int = 0, prefetch: int = 4) -> Iterator[Any]:
    """get_batch(start), ..., get_batch(stop - 1), made by `workers` processes ahead of use
    (0: made here, when asked for)."""
    if workers <= 0:
        return (get_batch(i) for i in range(start, stop))
    # fork: the workers inherit the data source as it is (a tokenizer, a text encoder) with
    # nothing pickled; they only run CPU code, so a CUDA context in this process is harmless
    context = multiprocessing.get_context("fork")
    loader = DataLoader(
        IndexedBatches(get_batch), batch_size=None, sampler=range(start, stop), num_workers=workers,
        collate_fn=_as_is, prefetch_factor=prefetch, multiprocessing_context=context,
        generator=torch.Generator(),  # its own: seeding the workers must not draw from the training RNG
    )
    return iter(loader)
