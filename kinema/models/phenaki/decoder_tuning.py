"""`kinema train phenaki-decoder`: teach a Phenaki model's C-ViViT decoder to draw its own MaskGIT's tokens.

A tokenizer's decoder only ever sees the codes its encoder makes. The MaskGIT writes codes
that are close but not the same: where an object's edge crosses a token, the four token
grids of an event often disagree a little, and the decoder, never having seen that,
rounds the corner (the judge's commonest failure: "square reads as a circle"), even though
it draws the encoder's codes of the same square sharply.

So fine-tune the decoder on codes the MaskGIT wrote, against the frames they should show:
encode a true event, mask a random share of its tokens (0 to `max_infill` per row; those
that show an object first, where the MaskGIT's errors are), let
the MaskGIT infill them with its own sampler (caption, story context and guidance as at
inference), and decode the infilled codes to the *true* event. The encoder stays frozen,
so every code keeps its meaning and the MaskGIT stays valid; only how codes are drawn
changes. The result is a complete model folder (OUTPUT/pipeline) with the same MaskGIT.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import typer

from ... import checkpoint as ckpt
from ...batch import Batch
from ...nn.attention import trim_padding
from ...precision import autocast
from ...tokenizer.cvivit import CViViT
from ...train.distributed import dist_info
from ...train.options import (
    DataWorkers, EmaDecay, Lr, MaxMinutes, MaxSteps, MinLrRatio, Precision, Progress, Resume, SaveEvery, SaveEveryMinutes, Seed,
    Threads, WarmupSteps, fresh_or_resumed,
)
from ...train.trainer import TrainConfig, Trainer
from .data import ClipBatch, PhenakiData
from .maskgit import MaskGit
from .pipeline import PhenakiPipeline, PhenakiSampler


@dataclass
class InfillBatch(Batch):
    """One micro-batch: the true events and, once `Infill` has run, the codes to draw them from."""

    index: int  # the micro-batch's number: seeds its masks and samples (exact resume)
    clips: ClipBatch
    codes: torch.Tensor | None = None  # [B, T', h, w] the events' codes with the MaskGIT's infill


@dataclass
class Infill:
    """Encode a batch's events and let the MaskGIT redraw a random share of each one's tokens."""

    data: PhenakiData
    transformer: MaskGit
    sampler: PhenakiSampler
    max_infill: float = 0.5  # each row redraws U(0, max_infill) of its tokens
    objects_first: bool = True  # redraw the tokens that show an object before any backdrop
    steps: int = 6  # MaskGIT decoding steps over the redrawn tokens
    seed: int = 0
    rank: int = 0

    def choose(self, foreground: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Which tokens to redraw [B, N] bool, given which show an object [B, N]: a uniform
        share in [0, max_infill] of each row, objects' tokens first if `objects_first`."""
        b, n = foreground.shape
        count = (torch.rand(b, generator=generator, device=foreground.device) * self.max_infill * n).round()
        order = torch.rand(b, n, generator=generator, device=foreground.device)
        if self.objects_first:  # where the MaskGIT's errors are: a flat backdrop token is rarely wrong
            order = order - foreground.float()
        return order.argsort(-1).argsort(-1) < count[:, None]

    @torch.no_grad()
    def __call__(self, batch: InfillBatch) -> InfillBatch:
        tokens = self.data.tokens(batch.clips)
        device = tokens.codes.device
        g = torch.Generator(device=device).manual_seed(int(np.random.SeedSequence([self.seed, self.rank, batch.index]).generate_state(1)[0]))
        b = tokens.codes.shape[0]
        masked = self.choose(tokens.foreground, g)
        text, text_mask = trim_padding(tokens.text, tokens.text_mask)
        self.transformer.to(device)
        with autocast(device):
            codes = self.transformer.generate(
                text, text_mask, tokens.context, has_context=tokens.has_context, codes=tokens.codes, masked=masked,
                steps=self.steps, guidance_scale=self.sampler.guidance_scale, temperature=self.sampler.temperature,
                top_k=self.sampler.top_k, choice_temperature=self.sampler.choice_temperature,
                refine_rounds=self.sampler.refine_rounds, refine_share=self.sampler.refine_share, refine_steps=self.sampler.refine_steps, generator=g,
            )
        grid = self.data.tokenizer.config.grid_size
        return InfillBatch(batch.index, batch.clips, codes.reshape(b, -1, grid, grid))


def infill_loss(model: CViViT, batch: InfillBatch) -> dict[str, torch.Tensor]:
    """The tokenizer's reconstruction loss, drawing the true events from the infilled codes."""
    return model.decoder_loss(model.indices_to_codes(batch.codes), batch.clips.events)[1]


def phenaki_decoder(
    model: str = typer.Option(..., "--model", help="the Phenaki model folder (or shipped name) whose decoder learns its MaskGIT's tokens"),
    output: Path = typer.Option(..., "--output", "-o", help="run folder: checkpoints/, final/, pipeline/ (the model with the new decoder)"),
    max_steps: MaxSteps = 2000,
    batch_size: int = typer.Option(8, help="events per micro-batch per process"),
    lr: Lr = 1e-4,
    warmup_steps: WarmupSteps = 50,
    min_lr_ratio: MinLrRatio = 0.1,
    ema_decay: EmaDecay = 0.999,
    save_every: SaveEvery = 500,
    save_every_minutes: SaveEveryMinutes = 10.0,
    resume: Resume = False,
    seed: Seed = 0,
    max_infill: float = typer.Option(0.5, min=0.0, max=1.0, help="each event redraws a uniform share in [0, this] of its tokens"),
    objects_first: bool = typer.Option(True, "--objects-first/--anywhere", help="redraw the tokens that show an object first (the MaskGIT's errors are there), or tokens anywhere"),
    infill_steps: int = typer.Option(6, min=1, help="MaskGIT decoding steps for the redrawn tokens"),
    story_share: float = typer.Option(0.5, help="share of events that continue a story from a context frame"),
    threads: Threads = None,
    precision: Precision = "auto",
    progress: Progress = True,
    data_workers: DataWorkers = 0,
    max_minutes: MaxMinutes = None,
) -> None:
    """Fine-tune a Phenaki model's C-ViViT decoder on its MaskGIT's infills (codes and MaskGIT unchanged)."""
    from ...pipelines import load_pipeline

    fresh_or_resumed(output, resume)
    if threads:
        torch.set_num_threads(threads)
    try:
        pipe = load_pipeline(model, device="cpu")
    except (ValueError, ckpt.CheckpointError) as err:
        raise typer.BadParameter(f"--model: {err}") from err
    if not isinstance(pipe, PhenakiPipeline):
        raise typer.BadParameter(f"--model {model}: a {pipe.name} model, not a Phenaki one")
    rank, _ = dist_info()
    tokenizer = pipe.tokenizer.float().train().freeze_encoder()  # fp32 master weights; the codes never move
    transformer = pipe.transformer.float().eval().requires_grad_(False)
    frozen = copy.deepcopy(tokenizer).eval().requires_grad_(False)  # encodes the events, never trained
    data = PhenakiData(frozen, pipe.text_encoder, batch_size=batch_size, seed=seed, rank=rank, story_share=story_share)
    infill = Infill(data, transformer, pipe.sampler, max_infill=max_infill, objects_first=objects_first, steps=infill_steps, seed=seed, rank=rank)
    config = TrainConfig(
        output=str(output), max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, ema_decay=ema_decay,
        save_every=save_every, save_every_minutes=save_every_minutes, seed=seed, precision=precision, progress=progress,
        data_workers=data_workers, max_minutes=max_minutes,
    )
    trainable = sum(p.numel() for p in tokenizer.parameters() if p.requires_grad)
    if rank == 0:
        typer.echo(f"C-ViViT decoder: {trainable / 1e6:.2f} M trainable parameters; infill up to {max_infill:.0%} of each event's tokens in {infill_steps} MaskGIT steps")
    trainer = Trainer(
        tokenizer, config, lambda i: InfillBatch(i, data.clips(i)), infill_loss,
        export_name="tokenizer", export_extra={"decoder_tuned_for": str(model)}, prepare=infill,
    )
    trainer.train(resume=resume)
    if trainer.is_main:
        tuned = PhenakiPipeline(trainer.ema.model, transformer, pipe.text_encoder, pipe.sampler)
        extra = {"decoder_tuning": {"from": str(model), "step": trainer.step, "elapsed_seconds": round(trainer.elapsed, 1), "max_infill": max_infill, "objects_first": objects_first, "infill_steps": infill_steps}}
        folder = tuned.save_pretrained(output / "pipeline", extra)
        typer.echo(f"model folder: {folder} (kinema generate --model {folder} ...); {json.dumps(extra)}")
