"""Training in several processes, with PyTorch's own engine: `torchrun` starts the processes,
`torch.distributed` connects them (gloo on CPU, nccl on CUDA) and `DistributedDataParallel`
averages the gradients — or, with `--fsdp`, FSDP2 (`torch.distributed.fsdp.fully_shard`)
shards parameters, gradients and optimizer state over the ranks, for models whose training
state does not fit one device.

    torchrun --standalone --nproc-per-node 2 -m kinema.train tokenizer --output runs/tok

A plain `python -m kinema.train ...` is a world of one process: nothing here does anything.

Data shards. A run's data stream is cut into `shards` sub-streams: global batch `i` is the
concatenation of batch `i` of every shard (shard `s` is the dataset built with
`rank=s, world_size=shards`), and rank `r` of `W` trains on shards `r*S/W ... (r+1)*S/W - 1`.
By default `shards == W`, so rank `r` reads its own dataset (`rank=r`), exactly as a dataset
built for that rank. Fixing `shards` instead makes the data a function of the global batch
alone, whatever the number of processes: 2 processes with batch 2 and 1 process with batch
4 and `shards=2` see the same 4 clips at every step, in the same order — which is how
`tests/test_distributed.py` proves the two runs train to the same weights.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel


def dist_info() -> tuple[int, int]:
    """(rank, world_size) as torchrun sets them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class LaunchError(RuntimeError):
    """torchrun started processes this machine cannot serve (a user's fix, not a bug)."""


def init_distributed() -> tuple[int, int]:
    """Join torchrun's process group when WORLD_SIZE > 1 (nccl with one GPU per process,
    `LOCAL_RANK`'s, else gloo); returns (rank, world_size). Idempotent; the group is destroyed
    at exit."""
    rank, world_size = dist_info()
    if world_size <= 1 or dist.is_initialized():
        return rank, world_size
    if "MASTER_ADDR" not in os.environ:
        raise LaunchError(f"WORLD_SIZE={world_size} but no MASTER_ADDR: start multi-process training with torchrun")
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local_rank() >= gpus:  # NCCL refuses two ranks on one GPU ("invalid usage")
            raise LaunchError(
                f"torchrun started process {local_rank()} on a node with {gpus} GPU{'s' * (gpus != 1)}: "
                f"use --nproc-per-node {gpus}, or CUDA_VISIBLE_DEVICES= to train on the CPU (gloo)"
            )
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    atexit.register(cleanup)
    return rank, world_size


def backend() -> str | None:
    """The process group's backend ("gloo", "nccl"), None outside torchrun."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def cleanup() -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    if dist.is_available() and dist.is_initialized():
        try:
            barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src`, on every rank (a no-op in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def means(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """Each logged value's sum over the micro-batches that measured it, over their count (a
    loss term may have nothing to measure in some micro-batch: NaN there, left out); NaN
    where none did."""
    return {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}


def mean_over_ranks(sums: dict[str, float], counts: dict[str, int], device: torch.device) -> dict[str, float]:
    """`means` over the micro-batches of all ranks (for logging what the whole global batch
    did). Every rank must log the same keys."""
    if is_distributed():
        keys = sorted(sums)
        t = torch.tensor([sums[k] for k in keys] + [counts[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, n = t.chunk(2)
        sums, counts = dict(zip(keys, total.tolist())), dict(zip(keys, n.tolist()))
    return means(sums, counts)


class LossModule(nn.Module):
    """`loss_fn(model, batch)` as a module's forward. DDP synchronises gradients of what runs
    through its wrapper's forward; a loss may call any method of the model (`model.loss(...)`),
    so the wrapper wraps the loss, not the model. Parameter names gain a `model.` prefix."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], dict[str, torch.Tensor]]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, batch)


def wrap_ddp(module: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """`module` in DistributedDataParallel when the process group has several ranks (its
    parameters are broadcast from rank 0 here, so every rank starts equal), else itself."""
    if not is_distributed():
        return module
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def fsdp_units(module: nn.Module) -> list[nn.Module]:
    """The blocks FSDP gathers one at a time: the modules held in `module`'s outermost
    ModuleLists (transformer layers, U-Net levels; through nested ModuleLists, which have no
    forward of their own), so only one block's full weights exist at once. Everything else
    (embeddings, heads, norms) is gathered with the root."""
    units: list[nn.Module] = []
    taken: list[str] = []
    for name, child in module.named_modules():
        if not isinstance(child, nn.ModuleList) or any(name.startswith(t + ".") for t in taken):
            continue
        taken.append(name)
        stack = list(child)
        while stack:
            item = stack.pop(0)
            if isinstance(item, nn.ModuleList):
                stack = list(item) + stack
            elif any(True for _ in item.parameters()):
                units.append(item)
    return units


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (DDP does this itself; FSDP does not)."""
    if is_distributed():
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)


def wrap_fsdp(module: nn.Module, device: torch.device, units: bool = True) -> nn.Module:
    """`module` sharded in place with FSDP2 over all ranks (one process per device): every
    parameter becomes a DTensor holding 1/world of it along dim 0, gathered whole only while
    its block runs; gradients are reduce-scattered, so the optimizer keeps 1/world of its
    moments. `units=False` shards the parameters as one group (for a copy that never runs,
    the EMA). Call `broadcast_module` first: FSDP shards each rank's own initial weights."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in fsdp_units(module) if units else []:
        fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


@contextlib.contextmanager
def gradient_sync(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Backward without the gradient all-reduce (DDP) or reduce-scatter (FSDP) unless
    `enabled`: accumulation communicates once, on a step's last micro-batch."""
    if enabled:
        yield
    elif isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    elif isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP DTensor; any other tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered whole (a collective: every rank must call it); a plain tensor as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state(state: dict[str, Any], keep: bool = True) -> dict[str, Any]:
    """`state` with every DTensor gathered whole, one tensor at a time on CPU. A collective
    under FSDP: every rank calls it with the same keys; ranks with `keep=False` (all but the
    writer of a checkpoint) drop what they gather and get {}."""
    out = {}
    for key, value in state.items():
        if torch.is_tensor(value):
            value = full_tensor(value.detach())
            if keep:
                out[key] = value.cpu()
        elif keep:
            out[key] = value
    return out


def shard_like(reference: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full `tensors` (read from a checkpoint on every rank) cut into this rank's shards where
    the `reference` entry of the same key is a DTensor; no communication."""
    out = {}
    for key, value in tensors.items():
        ref = reference.get(key)
        if isinstance(ref, DTensor):
            value = distribute_tensor(value.to(ref.device), ref.device_mesh, ref.placements, src_data_rank=None)
        out[key] = value
    return out


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank: collectives (FSDP's checkpoint gathers) must be entered
    by all ranks, whatever each one's clock or file system says."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def concat_batches(batches: list[Any]) -> Any:
    """One batch from several of the same dataclass: tensors concatenated along the batch
    axis, lists joined, other fields (the batch index) taken from the first."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    if not dataclasses.is_dataclass(first):
        raise TypeError(f"cannot concatenate batches of type {type(first).__name__}: expected a dataclass")
    values = {}
    for f in dataclasses.fields(first):
        parts = [getattr(b, f.name) for b in batches]
        if torch.is_tensor(parts[0]):
            shapes = {tuple(p.shape[1:]) for p in parts}
            if len(shapes) > 1:
                raise ValueError(f"shards gave batches of different shapes for {f.name!r} ({sorted(shapes)}); use one shard per rank")
            values[f.name] = torch.cat(parts)
        elif isinstance(parts[0], list):
            values[f.name] = [x for p in parts for x in p]
        else:
            values[f.name] = parts[0]
    return type(first)(**values)


class ShardedBatches:
    """`get_batch(i)` of rank `rank` of `world_size` over a data stream of `shards` shards
    (see the module docstring). `make_dataset(shard, shards, batch_size)` builds one shard's
    dataset; `batch_size` is this rank's micro-batch, split evenly over its shards."""

    def __init__(self, make_dataset: Callable[[int, int, int], Any], batch_size: int, *, rank: int = 0, world_size: int = 1, shards: int | None = None):
        shards = world_size if shards is None else shards
        if shards < world_size or shards % world_size:
            raise ValueError(f"--data-shards ({shards}) must be a multiple of the number of processes ({world_size})")
        per_rank = shards // world_size
        if batch_size % per_rank:
            raise ValueError(f"--batch-size ({batch_size}) must be a multiple of the shards per process ({per_rank})")
        self.shards = shards
        self.datasets = [make_dataset(s, shards, batch_size // per_rank) for s in range(rank * per_rank, (rank + 1) * per_rank)]

    def __call__(self, index: int) -> Any:
        return concat_batches([d.batch(index) for d in self.datasets])
