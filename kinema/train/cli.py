"""`kinema train ...`: one command per model family, all driving the same Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer

from .. import checkpoint as ckpt
from ..data import data_label, load_dataset
from ..tokenizer.cvivit import CViViT, CViViTConfig
from . import distributed
from .options import (
    DataWorkers, EmaDecay, ExportDtype, Fsdp, GradAccum, Lr, MaxMinutes, MaxSteps, MinLrRatio, Precision, Progress, Resume,
    SaveEvery, SaveEveryMinutes, Seed, Threads, WarmupSteps, config_overrides, fresh_or_resumed, reports_user_errors,
)
from .trainer import TrainConfig, Trainer, list_checkpoints, load_trained, resumed_model_config, warm_started

train_app = typer.Typer(help="Train kinema's models (one process, or many under torchrun).", no_args_is_help=True)


@train_app.callback()
def _main() -> None:
    """Train kinema's models (one process, or many under torchrun)."""
    try:
        distributed.init_distributed()  # first, so a launch mistake is one line, before any work
    except distributed.LaunchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def tokenizer_loss(model: CViViT, batch) -> dict[str, torch.Tensor]:
    return model(batch.video)[1]


@train_app.command()
@reports_user_errors
def tokenizer(
    output: Path = typer.Option(..., "--output", "-o", help="run folder: checkpoints/, final/, metrics.jsonl"),
    max_steps: MaxSteps = 20_000,
    data: str = typer.Option("shapes", "--data", help="'shapes' (the Shapes world) or a captioned-video folder / captions file"),
    batch_size: int = typer.Option(8, help="clips per micro-batch per process (16 frames, 64x64 each)"),
    grad_accum: GradAccum = 1,
    data_shards: Optional[int] = typer.Option(None, help="data sub-streams (default: one per process); fix it to get the same data from any number of processes"),
    lr: Lr = 1e-3,
    warmup_steps: WarmupSteps = 300,
    min_lr_ratio: MinLrRatio = 0.05,
    ema_decay: EmaDecay = 0.999,
    save_every: SaveEvery = 1000,
    save_every_minutes: SaveEveryMinutes = 10.0,
    resume: Resume = False,
    init_from: Optional[Path] = typer.Option(None, help="start from the EMA weights of this training checkpoint folder (the ones its tokens come from), or from the tokenizer of a model folder; a fresh optimizer and schedule, e.g. to fine-tune with another loss, into a changed config (weights match by name; what it adds starts fresh) or, with --freeze-encoder, the decoder alone"),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="train only the decoder side: the codes stay fixed, so a MaskGIT trained on them stays valid"),
    seed: Seed = 0,
    preset: str = typer.Option("small", help="C-ViViT size: tiny | small"),
    dim: Optional[int] = typer.Option(None, help="transformer width (overrides the preset)"),
    temporal_patch: Optional[int] = typer.Option(None, help="frames per token grid after the first (16 = 1 + 3x5)"),
    config_json: str = typer.Option("{}", help='more CViViTConfig overrides as JSON, e.g. \'{"depth": 2}\''),
    threads: Threads = None,
    auto_threads: bool = typer.Option(True, help="on CPU, keep measuring whether 1 thread beats --threads (a shared CPU) and switch"),
    precision: Precision = "auto",
    export_dtype: ExportDtype = "bfloat16",
    progress: Progress = True,
    fsdp: Fsdp = False,
    data_workers: DataWorkers = 0,
    max_minutes: MaxMinutes = None,
) -> None:
    """Train the C-ViViT video tokenizer on endless Shapes-world events (or on real videos, --data).

    Global batch = --batch-size x processes x --grad-accum."""
    fresh_or_resumed(output, resume)
    rank, world_size = distributed.init_distributed()
    echo = typer.echo if rank == 0 else (lambda *a, **k: None)
    if threads:
        torch.set_num_threads(threads)
    overrides = config_overrides(config_json, CViViTConfig)
    if dim is not None:
        overrides["dim"] = dim
    if temporal_patch is not None:
        overrides["temporal_patch"] = temporal_patch
    model_config = CViViTConfig.preset(preset, **overrides)
    if resume:
        saved = resumed_model_config(output)
        if saved is not None:
            model = ckpt.build_from_config(saved, "checkpoint config.json")
            if model.config != model_config:
                echo("note: resuming with the checkpoint's model config; --preset/--dim/--config-json are ignored")
            model_config = model.config
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = CViViT(model_config)
    if init_from is not None and not (resume and list_checkpoints(output)):
        try:
            report = warm_started(model, load_trained(init_from, "tokenizer"), init_from)
        except (ckpt.CheckpointError, RuntimeError, ValueError) as err:
            raise typer.BadParameter(f"--init-from {init_from}: {err}".splitlines()[0]) from err
        echo(report)
    if freeze_encoder:
        model.freeze_encoder()
    try:
        get_batch = distributed.ShardedBatches(
            lambda shard, shards, size: load_dataset(data, batch_size=size, seed=seed, rank=shard, world_size=shards),
            batch_size, rank=rank, world_size=world_size, shards=data_shards,
        )
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from err
    config = TrainConfig(
        output=str(output), max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
        grad_accum=grad_accum, ema_decay=ema_decay, save_every=save_every, save_every_minutes=save_every_minutes,
        seed=seed, precision=precision, progress=progress, export_dtype=export_dtype, auto_threads=auto_threads, fsdp=fsdp, data_workers=data_workers, max_minutes=max_minutes,
    )
    params = sum(p.numel() for p in model.parameters())
    echo(f"C-ViViT: {params / 1e6:.2f} M parameters, {model_config.tokens_per_clip(16)} tokens per 16-frame clip, "
               f"{model_config.codebook_size} codes; config {json.dumps(model_config.to_dict())}")
    trainer = Trainer(model, config, get_batch, tokenizer_loss, export_name="tokenizer", export_extra={"trained_on": data_label(data)})
    logs = trainer.train(resume=resume)
    echo(f"done at step {trainer.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()))


def _register_families() -> None:
    """Each family's train command lives beside its model; all of them hang off this app,
    so `kinema train X` and `torchrun -m kinema.train X` are the same command."""
    from ..models.imagen_video.train import imagen_video
    from ..models.matcher.train import matcher
    from ..models.phenaki.decoder_tuning import phenaki_decoder
    from ..models.phenaki.train import phenaki

    train_app.command("phenaki")(reports_user_errors(phenaki))
    train_app.command("phenaki-decoder")(reports_user_errors(phenaki_decoder))
    train_app.command("imagen-video")(reports_user_errors(imagen_video))
    train_app.command("matcher")(reports_user_errors(matcher))


_register_families()
