"""One trainer for every kinema model.

bf16 autocast (CPU or CUDA), AdamW, linear warmup + cosine decay, gradient clipping,
gradient accumulation, an EMA of the weights, a progress bar, and exactly resumable
checkpoints:

    OUTPUT/checkpoints/step-000500/
      config.json                 the model's config (+ "_class_name"), so evaluators can build it
      model.safetensors           raw weights
      ema.safetensors             EMA weights
      training_state.safetensors  optimizer moments
      trainer_state.json          step, data position, LR schedule, optimizer hyper-parameters,
                                  and size + sha256 of every file above
    OUTPUT/final/                 save_pretrained folder with the EMA weights (for inference)
    OUTPUT/metrics.jsonl          one JSON line per log interval

Data is addressed by index: `get_batch(i)` must return the i-th micro-batch (any order, any
time), so the data position is just a counter and a resumed run sees exactly the batches an
unbroken run would have (`TrainConfig.data_workers` makes them ahead in other processes,
in the same order: prefetch.py). Randomness is addressed the same way: each optimizer step
reseeds the RNGs from (seed, step, rank) (`step_seed`), so a resumed run draws what an
unbroken one would without carrying RNG state, and ranks draw independently (a global batch
gets as many mask, noise and timestep draws as it has clips). Tensors go to safetensors and
everything else to JSON: nothing is ever pickled or read with torch.load. Every checkpoint
folder appears atomically; a damaged one (truncated file, wrong checksum) is refused with a
message, set aside, and the previous one used. A fresh run refuses a folder that already
holds checkpoints (`check_output`).

Multi-process: under torchrun (RANK / WORLD_SIZE > 1) the Trainer joins the process group
(gloo on CPU, nccl on CUDA, see `distributed.py`) and wraps the loss in
DistributedDataParallel, which averages gradients over ranks; accumulation skips that
all-reduce (`no_sync`) on all but the last micro-batch. Each rank's `get_batch` gives its
own shard, so one optimizer step sees a global batch of
per-rank batch x world size x grad_accum clips. Parameters, optimizer moments and EMA stay
identical on every rank, so rank 0 alone logs and writes checkpoints, and on `resume` every
rank loads the checkpoint rank 0 chose.

FSDP (`TrainConfig.fsdp`, `--fsdp`): instead of a full copy per rank, PyTorch's FSDP2 keeps
1/world of every parameter, gradient, optimizer moment and EMA weight on each rank (see
`distributed.wrap_fsdp`). Checkpoints stay the same files: all ranks gather each tensor whole
and rank 0 writes it; on resume every rank reads the full files and keeps its own shard.
When training ends the EMA is gathered into a plain model on every rank, so `trainer.ema.model`
and `final/` are what a one-process run gives.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..fsutil import atomic_dir, atomic_path
from ..precision import PRECISIONS, autocast, default_device, resolve
from . import distributed
from .prefetch import batch_stream

STATE_JSON = "trainer_state.json"
STEP_PREFIX = "step-"
DAMAGED_PREFIX = "damaged-"
HELD_OUT_RANK = 2**20  # the held-out data stream: batch i of rank r is drawn from [seed, r, i], and no run has this rank
HELD_OUT_SEED = 2**31 - 1  # held-out batch i draws from seed HELD_OUT_SEED + i, far from any step's


@dataclass
class TrainConfig:
    output: str  # the run folder: checkpoints/, final/, metrics.jsonl
    max_steps: int = 10_000  # optimizer steps; the cosine schedule ends here
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 200  # linear warmup from 0
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    grad_accum: int = 1  # micro-batches per optimizer step (per rank)
    ema_decay: float = 0.999  # the EMA's decay, ramped as min(decay, (1 + step) / (10 + step))
    save_every: int = 500  # steps between checkpoints (0 = only at the end)
    save_every_minutes: float = 0.0  # also checkpoint when this much wall time has passed (0 = off)
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    log_every: int = 10
    seed: int = 0
    precision: str = "auto"  # "bf16" (autocast), "fp32", or "auto": bf16 where the hardware has it (precision.py)
    progress: bool = True  # show a progress bar
    export_dtype: str | None = None  # dtype of final/ weights: None (as trained) or "bfloat16"
    # CPU threads: on a CPU shared with other jobs, threads of one op wait on each other and
    # N threads can run several times slower than 1. "auto_threads" measures: now and then it
    # tries the other choice (1 or torch's current count) for a few steps and keeps whichever
    # is faster; probes come `thread_probe_every` steps apart, twice as far after each probe
    # that changes nothing (up to 8x; ThreadTuner).
    auto_threads: bool = False
    thread_probe_every: int = 100
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient in a step
    fsdp: bool = False  # several processes: shard parameters, gradients and optimizer state (FSDP2) instead of DDP's copies
    data_workers: int = 0  # processes making batches ahead of the step (prefetch.py); for GPUs, whose steps outrun one CPU core
    # a wall-clock budget for this invocation: stop, checkpoint and export final/ once it is
    # spent, as at max_steps. The schedule still ends at max_steps, so --resume continues it.
    max_minutes: float | None = None
    # the EMA's loss on this many held-out batches (the Trainer's `held_out`), logged as
    # held_out_<key> at each checkpoint; 0 = off
    held_out_batches: int = 0

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.grad_accum < 1 or self.max_steps < 0:
            raise ValueError("grad_accum must be >= 1 and max_steps >= 0")
        if self.data_workers < 0:
            raise ValueError(f"data_workers must be >= 0, got {self.data_workers}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.held_out_batches < 0:
            raise ValueError(f"held_out_batches must be >= 0, got {self.held_out_batches}")
        if self.log_every < 1 or self.save_every < 0 or self.keep_checkpoints < 0:
            raise ValueError("log_every must be >= 1, save_every and keep_checkpoints >= 0")


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one optimizer step on one rank: independent streams for every (step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(output: str | os.PathLike) -> list[Path]:
    """Checkpoint folders of a run, oldest first."""
    root = Path(output) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint's trainer_state.json, after checking every file's size and checksum;
    raises CheckpointError naming the damaged file otherwise."""
    state = ckpt.read_json(folder / STATE_JSON)
    for name, meta in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ckpt.CheckpointError(f"{path}: missing")
        if path.stat().st_size != meta["size"]:
            raise ckpt.CheckpointError(f"{path}: {path.stat().st_size} bytes, expected {meta['size']} (truncated?)")
        if _sha256(path) != meta["sha256"]:
            raise ckpt.CheckpointError(f"{path}: checksum mismatch (corrupt)")
    return state


def newest_checkpoint(output: str | os.PathLike, on_damaged: Callable[[Path, ckpt.CheckpointError], None] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(folder, trainer state) of the newest checkpoint that verifies, or None; each damaged
    one on the way is handed to `on_damaged`."""
    for folder in reversed(list_checkpoints(output)):
        try:
            return folder, verify_checkpoint(folder)
        except ckpt.CheckpointError as err:
            if on_damaged is not None:
                on_damaged(folder, err)
    return None


def resumed_model_config(output: str | os.PathLike) -> dict[str, Any] | None:
    """The model config.json of the checkpoint `--resume` will load (the newest undamaged
    one), or None: a resumed run is rebuilt as it was, whatever the command line now says."""
    found = newest_checkpoint(output)
    return ckpt.read_json(found[0] / ckpt.CONFIG_NAME) if found else None


def keep_metrics_until(path: Path, step: int) -> None:
    """A run's log holds its own steps once each: a resumed run drops the records after the
    checkpoint it resumes from (it logs those steps again), a fresh run starts the file anew."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True) if line.strip() and json.loads(line)["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def check_output(output: str | os.PathLike, resume: bool) -> None:
    """A fresh run refuses a folder that holds another run's checkpoints: it would prune
    them by step number (its own newest first, if theirs are further on), and a later
    --resume would mix the two runs."""
    found = list_checkpoints(output)
    if found and not resume:
        raise FileExistsError(f"{output} already holds the checkpoints of a run (newest: {found[-1].name}): add --resume to continue it, or train into another --output")


def load_checkpoint_model(folder: str | os.PathLike, ema: bool = True) -> nn.Module:
    """The model of a training checkpoint (EMA weights by default), built from its
    config.json through the checkpoint registry, in eval mode."""
    folder = Path(folder)
    model = ckpt.build_from_config(ckpt.read_json(folder / ckpt.CONFIG_NAME), str(folder / ckpt.CONFIG_NAME))
    path = folder / ("ema.safetensors" if ema else "model.safetensors")
    ckpt.load_weights(model, ckpt.read_tensors(path), path)
    return model.eval()


def load_trained(folder: str | os.PathLike, component: str) -> nn.Module:
    """`component` of a model folder (model_index.json), or the EMA weights of a training
    checkpoint folder after checking its files (CheckpointError names a damaged one)."""
    folder = Path(folder)
    if (folder / ckpt.MODEL_INDEX).is_file():
        return ckpt.load_component(folder, component)
    verify_checkpoint(folder)
    return load_checkpoint_model(folder, ema=True)


def warm_start(model: nn.Module, source: nn.Module) -> tuple[list[str], list[str]]:
    """Copy `source`'s weights into `model` wherever a name exists in both, so a model
    whose architecture changed a little (a layer removed or added) starts from the trained
    one. Returns (names new in `model`, kept fresh; names of `source` left unused). A tensor
    of the same name but another shape, or no name in common, is an error."""
    ours, theirs = model.state_dict(), source.state_dict()
    common = ours.keys() & theirs.keys()
    if not common:
        raise ValueError(f"no weights in common: it holds a {type(source).__name__}, not a {type(model).__name__}")
    for name in sorted(common):
        if ours[name].shape != theirs[name].shape:
            raise ValueError(f"{name} is {list(theirs[name].shape)} there but {list(ours[name].shape)} here")
    model.load_state_dict({name: theirs[name] for name in common}, strict=False)
    return sorted(ours.keys() - common), sorted(theirs.keys() - common)


def warm_started(model: nn.Module, source: nn.Module, where: str | os.PathLike) -> str:
    """`warm_start`, and the line a training command prints about it: where the weights came
    from, and how many tensors match no name on the other side."""
    fresh, unused = warm_start(model, source)
    return f"weights from {where}" + (f" ({len(fresh)} tensors new here start fresh, {len(unused)} of the checkpoint's are unused)" if fresh or unused else "")


class ThreadTuner:
    """Chooses between 1 thread and `max_threads` by timing steps (see TrainConfig.auto_threads)."""

    def __init__(self, max_threads: int, probe_every: int = 200, probe_steps: int = 6, log: Callable[[str], None] = print):
        self.choices = (max_threads, 1)
        self.current = max_threads
        self.probe_every, self.probe_steps, self.log = probe_every, probe_steps, log
        self.recent: list[float] = []
        self.probe: list[float] | None = None
        self.steps = 0
        # each probe costs a few slow steps: after a probe that changes nothing, wait twice as
        # long for the next one (up to 8x), so a long stretch of contention is not taxed much
        self.interval = probe_every
        self.next_probe = 2 * probe_steps

    def after_step(self, seconds: float) -> None:
        self.steps += 1
        if self.probe is None:
            self.recent = (self.recent + [seconds])[-self.probe_steps :]
            if self.steps >= self.next_probe and len(self.recent) == self.probe_steps and self.choices[0] > 1:
                self.probe = []
                torch.set_num_threads(self._other())
            return
        self.probe.append(seconds)
        if len(self.probe) > self.probe_steps:  # the first probe step warms kernels up: skip it
            mine, other = float(np.median(self.recent)), float(np.median(self.probe[1:]))
            if other < mine:
                self.log(f"threads: {self._other()} ({other:.2f} s/step) beats {self.current} ({mine:.2f} s/step); switching")
                self.current = self._other()
                self.interval = self.probe_every
            else:
                self.interval = min(2 * self.interval, 8 * self.probe_every)
            self.next_probe = self.steps + self.interval
            torch.set_num_threads(self.current)
            self.probe, self.recent = None, []

    def _other(self) -> int:
        return self.choices[1] if self.current == self.choices[0] else self.choices[0]


class EMA:
    """Exponential moving average of a model's floating-point state (fp32)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for (name, ema_v), v in zip(self.model.state_dict().items(), model.state_dict().values()):
            # under FSDP both are sharded alike: each rank averages its own shard
            ema_v, v = distributed.local(ema_v), distributed.local(v)
            if ema_v.is_floating_point():
                ema_v.lerp_(v.detach().float(), 1 - decay)
            else:
                ema_v.copy_(v)


class Trainer:
    """Train `model` by minimising `loss_fn(model, batch)["loss"]` over `get_batch(0), get_batch(1), ...`.

    `loss_fn` returns a dict of scalars; "loss" is optimised and every entry is logged.
    The model must be registered in `kinema.checkpoint` (its config is saved with it).
    `prepare`, if given, turns each batch into the model's input once it is on the training
    device: work for the GPU that data workers should not do on their CPUs. `held_out(i)`, if
    given, is held-out batch i (a stream training never draws), scored at each checkpoint
    (`held_out_loss`).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        get_batch: Callable[[int], Any],
        loss_fn: Callable[[nn.Module, Any], dict[str, torch.Tensor]],
        *,
        export_name: str = "model",
        export_extra: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        prepare: Callable[[Any], Any] | None = None,
        held_out: Callable[[int], Any] | None = None,
    ):
        self.config = config
        self.rank, self.world_size = distributed.init_distributed()
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        self.precision = resolve(config.precision, self.device)  # "bf16" or "fp32"
        if config.precision == "auto" and self.precision == "fp32":
            self._print(f"precision: fp32 ({self.device.type} has no native bf16 kernels; --precision bf16 forces autocast)")
        self.get_batch = get_batch
        self.prepare = prepare  # batch -> batch on the training device (e.g. a frozen tokenizer run on the GPU)
        self.loss_fn = loss_fn
        if config.held_out_batches and held_out is None:
            raise ValueError("held_out_batches needs the held-out batches (Trainer's held_out)")
        self.held_out = held_out
        # what runs the loss: the loss itself in one process, the loss in DDP (or FSDP) under
        # torchrun (built before the EMA copy: every rank must copy rank 0's weights)
        self.fsdp = config.fsdp and self.world_size > 1
        if config.fsdp and not self.fsdp:
            self._print("fsdp: one process, nothing to shard; training as usual")
        loss_module = distributed.LossModule(self.model, loss_fn)
        if self.fsdp:
            distributed.broadcast_module(loss_module)
            self.ema = EMA(self.model, config.ema_decay)  # a plain copy first, then sharded as the model is
            distributed.wrap_fsdp(self.ema.model, self.device, units=False)
            self.loss_module = distributed.wrap_fsdp(loss_module, self.device)
        else:
            self.loss_module = distributed.wrap_ddp(loss_module, self.device, config.find_unused_parameters)
        self.export_name = export_name
        self.export_extra = export_extra or {}
        self.output = Path(config.output)
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
            betas=config.betas,
        )
        if not self.fsdp:
            self.ema = EMA(self.model, config.ema_decay)
        self.step = 0
        self.data_position = 0  # the next micro-batch index of this rank's stream
        self.elapsed = 0.0  # training wall time over all sessions

    # -- state -----------------------------------------------------------------------
    def _seed_step(self) -> None:
        """Reseed every RNG the loss may draw from (masks, noise, timesteps, dropped captions)
        for this step on this rank."""
        seed = step_seed(self.config.seed, self.step, self.rank)
        torch.manual_seed(seed)  # CPU and every CUDA device
        random.seed(seed)
        np.random.seed(seed % 2**32)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _autocast(self):
        return autocast(self.device, self.precision)

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes the next checkpoint folder. Under FSDP every rank must call this:
        the shards are gathered whole (one tensor at a time) before rank 0 writes them."""
        if not (self.is_main or self.fsdp):
            return None
        model_state = distributed.full_state(self.model.state_dict(), keep=self.is_main)
        ema_state = distributed.full_state(self.ema.model.state_dict(), keep=self.is_main)
        optim = self.optimizer.state_dict()
        optim["state"] = {pid: distributed.full_state(optim["state"][pid], keep=self.is_main) for pid in sorted(optim["state"])}
        if not self.is_main:
            return None
        folder = self.output / "checkpoints" / f"{STEP_PREFIX}{self.step:06d}"
        with atomic_dir(folder) as tmp:
            (tmp / ckpt.CONFIG_NAME).write_text(json.dumps(ckpt.config_dict(self.model), indent=2) + "\n")
            save_file(ckpt.state_tensors(model_state), str(tmp / "model.safetensors"))
            save_file(ckpt.state_tensors(ema_state), str(tmp / "ema.safetensors"))
            tensors: dict[str, torch.Tensor] = {}
            scalars: dict[str, dict[str, Any]] = {}
            for pid, pstate in optim["state"].items():
                for key, value in pstate.items():
                    if torch.is_tensor(value):
                        tensors[f"optimizer/{pid}/{key}"] = value.detach().cpu().contiguous().clone()
                    else:
                        scalars.setdefault(str(pid), {})[key] = value
            save_file(tensors, str(tmp / "training_state.safetensors"))
            files = {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in ("config.json", "model.safetensors", "ema.safetensors", "training_state.safetensors")}
            state = {
                "step": self.step,
                "data_position": self.data_position,
                "elapsed_seconds": self.elapsed,
                "world_size": self.world_size,
                "train_config": dataclasses.asdict(self.config),
                "optimizer": {"param_groups": optim["param_groups"], "scalars": scalars},
                "files": files,
            }
            (tmp / STATE_JSON).write_text(json.dumps(state) + "\n")
        self._prune()
        return folder

    def _prune(self) -> None:
        """Keep the newest `keep_checkpoints`; remove what a killed save left half-written."""
        keep = self.config.keep_checkpoints
        if keep > 0:
            for old in list_checkpoints(self.output)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        for debris in (self.output / "checkpoints").glob(f".{STEP_PREFIX}*.tmp"):
            shutil.rmtree(debris, ignore_errors=True)

    def load_checkpoint(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        """Load a checkpoint on this rank (under FSDP each rank keeps its shards of the full
        files); `state` is its trainer state if already verified."""
        state = state or verify_checkpoint(folder)
        for module, name in ((self.model, "model.safetensors"), (self.ema.model, "ema.safetensors")):
            ckpt.load_weights(module, distributed.shard_like(module.state_dict(), ckpt.read_tensors(folder / name)), folder / name)
        tensors = ckpt.read_tensors(folder / "training_state.safetensors")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]  # optimizer ids number these
        optim_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, pid, name = key.split("/", 2)
                if int(pid) < len(params) and value.shape == params[int(pid)].shape:  # moments are sharded as their parameter
                    value = distributed.shard_like({name: params[int(pid)]}, {name: value})[name]
                optim_state.setdefault(int(pid), {})[name] = value
        for pid, values in state["optimizer"]["scalars"].items():
            optim_state.setdefault(int(pid), {}).update(values)
        try:
            self.optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer"]["param_groups"]})
        except (ValueError, KeyError) as err:
            raise ckpt.CheckpointError(f"{folder}: optimizer state does not fit this model ({err})") from err
        self.step = int(state["step"])
        self.data_position = int(state.get("data_position", self.step * self.config.grad_accum))
        if state.get("world_size", self.world_size) != self.world_size:
            self._print(f"note: {folder.name} was written by {state['world_size']} ranks, this run has {self.world_size}: each rank goes on from the same data position in its own shard")
        self.elapsed = float(state.get("elapsed_seconds", 0.0))

    def resume(self) -> Path | None:
        """Load the newest checkpoint that verifies. Damaged ones are reported and set aside
        (renamed damaged-step-N, out of the run's list: newer than the checkpoints this run
        will write, they would be kept when those are pruned). Rank 0 chooses; every other
        rank loads the very same folder."""

        def set_aside(folder: Path, err: ckpt.CheckpointError) -> None:
            aside = folder.with_name(DAMAGED_PREFIX + folder.name)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(folder, aside)
            self._print(f"refusing damaged checkpoint {folder.name}: {err}; set aside as {aside.name}, trying the previous one")

        found = newest_checkpoint(self.output, set_aside) if self.is_main else None
        chosen = distributed.broadcast_object(None if found is None else str(found[0]))
        if chosen is None:
            self._print(f"no usable checkpoint in {self.output / 'checkpoints'}; starting at step 0")
            return None
        folder = Path(chosen)
        self.load_checkpoint(folder, found[1] if found else None)
        self._print(f"resumed from {folder} (step {self.step})")
        return folder

    def export(self) -> Path | None:
        if not self.is_main:
            return None
        dtype = getattr(torch, self.config.export_dtype) if self.config.export_dtype else None
        extra = {"step": self.step, "elapsed_seconds": round(self.elapsed, 1), **self.export_extra}
        return ckpt.save_pretrained(self.output / "final", {self.export_name: self.ema.model}, index_extra=extra, dtype=dtype)

    # -- loop ------------------------------------------------------------------------
    def _print(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)

    def train(self, resume: bool = False) -> dict[str, float]:
        cfg = self.config
        check_output(self.output, resume)
        if resume:
            self.resume()
        self.model.train()
        metrics_path = self.output / "metrics.jsonl"
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            keep_metrics_until(metrics_path, self.step)
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and self.is_main), dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        started = last_save_time = time.monotonic()
        tuner = ThreadTuner(torch.get_num_threads(), cfg.thread_probe_every, log=self._print) if cfg.auto_threads and self.device.type == "cpu" else None
        window_start, window_steps = time.monotonic(), 0
        logs: dict[str, float] = {}
        announced = False
        stream = batch_stream(self.get_batch, self.data_position, self.data_position + max(0, cfg.max_steps - self.step) * cfg.grad_accum, cfg.data_workers)
        while self.step < cfg.max_steps:
            t0 = time.monotonic()
            self._seed_step()
            lr = lr_at(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            for micro in range(cfg.grad_accum):
                batch = next(stream)  # micro-batch self.data_position
                self.data_position += 1
                batch = self._on_device(batch)
                if not announced:
                    self._announce_batch(batch)
                    announced = True
                # DDP / FSDP reduce gradients in backward: only on the step's last micro-batch
                with distributed.gradient_sync(self.loss_module, enabled=micro == cfg.grad_accum - 1):
                    with self._autocast():
                        out = self.loss_module(batch)
                    (out["loss"].float() / cfg.grad_accum).backward()
                _accumulate(sums, counts, out)
            grad_norm = float(distributed.full_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if (self.step + 1) % cfg.log_every == 0 or self.step + 1 == cfg.max_steps:
                means = distributed.mean_over_ranks(sums, counts, self.device)  # log the global batch's loss
            else:  # the bar shows this rank's
                means = distributed.means(sums, counts)
            self.step += 1
            self.ema.update(self.model, self.step)
            self.elapsed += time.monotonic() - t0
            if tuner is not None:
                tuner.after_step(time.monotonic() - t0)
            window_steps += 1
            logs = {**means, "lr": lr, "grad_norm": grad_norm}
            bar.update(1)
            bar.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
            if self.is_main and (self.step % cfg.log_every == 0 or self.step == cfg.max_steps):
                rate = window_steps / max(1e-9, time.monotonic() - window_start)
                window_start, window_steps = time.monotonic(), 0
                self._log_record(metrics_path, {"steps_per_s": round(rate, 3), "threads": torch.get_num_threads(), "elapsed_s": round(self.elapsed, 1)}, logs,
                                 echo=not sys.stderr.isatty() or not cfg.progress)
            due = cfg.save_every and self.step % cfg.save_every == 0
            due = due or (cfg.save_every_minutes and time.monotonic() - last_save_time >= 60 * cfg.save_every_minutes)
            if self.fsdp and cfg.save_every_minutes:
                due = distributed.agree(bool(due), self.device)  # clocks differ; FSDP saves together
            if due and self.step < cfg.max_steps:
                self._log_held_out(metrics_path)
                self.save_checkpoint()
                last_save_time = time.monotonic()
            if cfg.max_minutes and distributed.agree(time.monotonic() - started >= 60 * cfg.max_minutes, self.device):
                self._print(f"time budget of {cfg.max_minutes:g} min spent at step {self.step}; --resume continues the schedule to {cfg.max_steps}")
                break
        bar.close()
        final = self.is_main and (not list_checkpoints(self.output) or list_checkpoints(self.output)[-1].name != f"{STEP_PREFIX}{self.step:06d}")
        if self.fsdp:
            final = distributed.agree(final, self.device)  # every rank gathers, rank 0 writes
        if final:
            self._log_held_out(metrics_path)
            self.save_checkpoint()
        if self.fsdp:
            self._gather_ema()
        self.export()
        distributed.barrier()  # every rank returns once rank 0's checkpoint and export are on disk
        return logs

    @torch.no_grad()
    def held_out_loss(self) -> dict[str, float]:
        """The EMA's loss on the same held-out batches with the same random draws (timesteps,
        noise, masks, dropped captions) every time. The training loss is of fresh batches at
        fresh draws, too noisy to show a model getting worse at what it drew well while a
        fine-tune teaches it something else; this is comparable from checkpoint to checkpoint
        and from run to run. Every rank computes it (under FSDP the EMA's forward is collective);
        the RNGs are left as they were."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for i in range(self.config.held_out_batches):
                torch.manual_seed(HELD_OUT_SEED + i)
                batch = self._on_device(self.held_out(i))
                with self._autocast():
                    out = self.loss_fn(self.ema.model, batch)
                _accumulate(sums, counts, out)
        return {f"held_out_{k}": v for k, v in distributed.means(sums, counts).items()}

    def _log_held_out(self, metrics_path: Path) -> None:
        if not self.config.held_out_batches:
            return
        scores = self.held_out_loss()
        if self.is_main:
            self._log_record(metrics_path, {}, scores)

    def _log_record(self, metrics_path: Path, fields: dict[str, Any], values: dict[str, float], echo: bool = True) -> None:
        """Append one line of metrics.jsonl at this step (a NaN value: nothing measured, left
        out) and, with `echo`, print it."""
        record = {"step": self.step, **fields, **{k: round(v, 6) for k, v in values.items() if not math.isnan(v)}}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            self._print(" ".join(f"{k}={v}" for k, v in record.items()))

    def _on_device(self, batch: Any) -> Any:
        """`batch` on the training device, made into the model's input (`prepare`)."""
        if hasattr(batch, "to"):
            batch = batch.to(self.device)
        return self.prepare(batch) if self.prepare is not None else batch

    def _gather_ema(self) -> None:
        """Replace the sharded EMA with a plain, whole model on every rank (a collective), so
        export and the caller (a pipeline, the next distillation round) use it as in one process."""
        full = distributed.full_state(self.ema.model.state_dict())
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the RNG as it was
            plain = ckpt.build_from_config(ckpt.config_dict(self.model), "EMA")
        ckpt.load_weights(plain, full, "EMA")
        self.ema.model = plain.to(self.device).float().eval().requires_grad_(False)

    def _announce_batch(self, batch: Any) -> None:
        size = _batch_size(batch)
        if size is None:
            return
        cfg = self.config
        where = f" on {self.device}" + (f" ({distributed.backend()})" if self.world_size > 1 else "")
        self._print(f"global batch = {size} per rank x {self.world_size} ranks x {cfg.grad_accum} accumulation = {size * self.world_size * cfg.grad_accum}{where}"
                    + (f"; FSDP: parameters, gradients and optimizer state sharded over {self.world_size} ranks" if self.fsdp else ""))


def _accumulate(sums: dict[str, float], counts: dict[str, int], out: dict[str, torch.Tensor]) -> None:
    """Add one micro-batch's logged values; a NaN value is nothing measured
    (kinema.train.distributed.means)."""
    for k, v in out.items():
        v = float(v.detach())
        sums[k] = sums.get(k, 0.0) + (0.0 if math.isnan(v) else v)
        counts[k] = counts.get(k, 0) + (not math.isnan(v))


def _batch_size(batch: Any) -> int | None:
    """Clips in a micro-batch: the length of its `.video`, or of its first tensor field."""
    video = getattr(batch, "video", None)
    if torch.is_tensor(video):
        return int(video.shape[0])
    if dataclasses.is_dataclass(batch):
        for f in dataclasses.fields(batch):
            value = getattr(batch, f.name)
            if torch.is_tensor(value) and value.ndim > 0:
                return int(value.shape[0])
    if torch.is_tensor(batch) and batch.ndim > 0:
        return int(batch.shape[0])
    return None
