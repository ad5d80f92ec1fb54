"""`kinema train matcher`: the video-text matcher on endless Shapes-world clips."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
import typer

from ... import checkpoint as ckpt
from ...errors import CheckpointError
from ...pipelines import SHAPES_WORLD
from ...train.distributed import dist_info
from ...train.options import (
    EmaDecay, ExportDtype, GradAccum, Lr, MaxMinutes, MaxSteps, Precision, Progress, Resume, SaveEvery, SaveEveryMinutes, Seed, Threads,
    WarmupSteps, config_overrides, fresh_or_resumed,
)
from ...train.trainer import TrainConfig, Trainer, load_trained, resumed_model_config, warm_started
from .data import MatcherData
from .model import VideoTextMatcher, VideoTextMatcherConfig, matching_loss


def matcher(
    output: Path = typer.Option(..., "--output", "-o", help="run folder: checkpoints/, final/, metrics.jsonl"),
    max_steps: MaxSteps = 3000,
    batch_size: int = typer.Option(32, help="clips per micro-batch (8 frames at 32x32 each)"),
    negatives: int = typer.Option(4, min=1, help="captions of each clip's scene with one thing changed, beside the batch's other captions"),
    backwards: bool = typer.Option(False, help="also ask each clip that runs one way (a move, a growth, a zoom) to fit its caption better than itself played backwards: the same pixels, so only the frames' order tells"),
    init_from: Optional[Path] = typer.Option(None, help="start from this matcher (a model folder's, or a training checkpoint's EMA weights) with a fresh optimizer and schedule, e.g. to fine-tune the shipped one; --config-json changes its architecture (weights match by name, what it adds starts fresh)"),
    grad_accum: GradAccum = 1,
    lr: Lr = 1e-3,
    warmup_steps: WarmupSteps = 50,
    ema_decay: EmaDecay = 0.99,
    save_every: SaveEvery = 250,
    save_every_minutes: SaveEveryMinutes = 10.0,
    resume: Resume = False,
    seed: Seed = 0,
    config_json: str = typer.Option("{}", help='VideoTextMatcherConfig overrides as JSON, e.g. \'{"width": 16}\''),
    into: Optional[Path] = typer.Option(None, help="when the run stops (--max-steps or --max-minutes), add its final/ matcher to this model folder as its 'matcher' component, replacing one it had (pipe(..., rerank='matcher') then uses it)"),
    threads: Threads = None,
    precision: Precision = "auto",
    export_dtype: ExportDtype = "bfloat16",
    progress: Progress = True,
    max_minutes: MaxMinutes = None,
) -> None:
    """Train the matcher that reranks a generator's candidates (DALL-E's CLIP reranking, here on the Shapes world)."""
    from ...text import get_text_encoder

    if threads:
        torch.set_num_threads(threads)
    if into is not None and not (into / ckpt.MODEL_INDEX).is_file():
        raise typer.BadParameter(f"{into} is not a model folder (no {ckpt.MODEL_INDEX})", param_hint="--into")
    fresh_or_resumed(output, resume)
    rank, _ = dist_info()
    saved = resumed_model_config(output) if resume else None
    if saved is not None:  # the run's own architecture; the weights come from disk
        model = ckpt.build_from_config(saved, "checkpoint config.json")
    elif init_from is not None:
        try:
            source = load_trained(init_from, "matcher")
        except CheckpointError as err:
            raise typer.BadParameter(f"{init_from}: {err}".splitlines()[0], param_hint="--init-from") from err
        if not isinstance(source, VideoTextMatcher):
            raise typer.BadParameter(f"{init_from} holds a {type(source).__name__}, not a matcher", param_hint="--init-from")
        # its architecture, changed where --config-json says; weights match by name
        torch.manual_seed(seed)
        model = VideoTextMatcher(replace(source.config, **config_overrides(config_json, VideoTextMatcherConfig)))
        try:
            report = warm_started(model, source, init_from)
        except ValueError as err:
            raise typer.BadParameter(f"{init_from}: {err}", param_hint="--init-from") from err
        typer.echo(f"{report}; a fresh optimizer and schedule")
    else:
        torch.manual_seed(seed)
        model = VideoTextMatcher(VideoTextMatcherConfig(**config_overrides(config_json, VideoTextMatcherConfig)))
    typer.echo(f"matcher: {model.num_parameters() / 1e6:.2f} M parameters; {json.dumps(model.config.to_dict())}")
    data = MatcherData(get_text_encoder(), batch_size=batch_size, negatives=negatives, seed=seed, rank=rank, backwards=backwards)
    config = TrainConfig(
        output=str(output), max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, grad_accum=grad_accum, ema_decay=ema_decay,
        save_every=save_every, save_every_minutes=save_every_minutes, seed=seed, precision=precision, progress=progress,
        export_dtype=export_dtype, max_minutes=max_minutes,
    )
    trainer = Trainer(model, config, data.batch, matching_loss, export_name="matcher", export_extra={"trained_on": SHAPES_WORLD})
    trainer.train(resume=resume)
    if rank == 0 and into is not None:
        ckpt.add_component(into, "matcher", ckpt.load_component(output / "final", "matcher"), dtype=getattr(torch, export_dtype) if export_dtype else None)
        typer.echo(f"added to {into} as its matcher")
