"""`kinema train phenaki`: MaskGIT on a frozen C-ViViT's tokens of the Shapes world (or of
a folder of captioned videos, `--data`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import torch
import typer

from ... import checkpoint as ckpt
from ...data import data_label, is_shapes, load_dataset
from ...nn.attention import trim_padding
from ...tokenizer.cvivit import CViViT
from ...train.distributed import dist_info
from ...train.options import (
    DataWorkers, EmaDecay, Fsdp, GradAccum, HeldOutBatches, Lr, MaxMinutes, MaxSteps, Precision, Progress, Resume, SaveEvery,
    SaveEveryMinutes, SceneMix, Seed, Threads, WarmupSteps, fresh_or_resumed, held_out_option, scene_mix_option,
)
from ...precision import default_device
from ...train.trainer import HELD_OUT_RANK, TrainConfig, Trainer, load_trained, resumed_model_config
from .data import PhenakiData, TokenBatch
from .maskgit import MaskGit, MaskGitConfig
from .pipeline import PhenakiPipeline, PhenakiSampler


def load_tokenizer(path: Path) -> CViViT:
    """A tokenizer from an inference folder (model_index.json) or a training checkpoint (its EMA)."""
    path = Path(path)
    model = load_trained(path, "tokenizer")
    if not isinstance(model, CViViT):
        raise ckpt.CheckpointError(f"{path}: holds a {type(model).__name__}, not a CViViT tokenizer")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def run_tokenizer(tokenizer: Path, output: Path, resume: bool, is_main: bool) -> CViViT:
    """The tokenizer a run trains on, kept whole in the run folder (OUTPUT/tokenizer/): a
    MaskGIT is only valid with these exact weights, and the checkpoint they came from may be
    pruned by the tokenizer's own run. `--resume` uses the run's copy."""
    copy = Path(output) / "tokenizer"
    if resume and (copy / ckpt.MODEL_INDEX).is_file():
        return load_tokenizer(copy)
    tok = load_tokenizer(tokenizer)
    if is_main:
        ckpt.save_pretrained(copy, {"tokenizer": tok}, index_extra={"source": str(tokenizer)})
    return tok


def maskgit_from_checkpoint(checkpoint: Path, config: MaskGitConfig) -> MaskGit:
    """A MaskGIT from the EMA weights of a training checkpoint (or a model folder's
    transformer), e.g. to adapt it to a tokenizer trained further (the digits of most codes
    move by at most one level, so it relearns fast) or to go on with a larger batch. Its own
    width and depth are kept; the token layout must match the tokenizer's."""
    try:
        model = load_trained(checkpoint, "transformer")
    except ckpt.CheckpointError as err:
        raise typer.BadParameter(f"--init-from: {err}") from err
    if not isinstance(model, MaskGit):
        raise typer.BadParameter(f"--init-from {checkpoint}: holds a {type(model).__name__}, not a MaskGit")
    got = model.config
    if (got.fsq_levels, got.grid, got.event_grids) != (config.fsq_levels, config.grid, config.event_grids):
        raise typer.BadParameter(f"--init-from {checkpoint}: its token layout {got.fsq_levels} on {got.event_grids}x{got.grid}x{got.grid} does not match the tokenizer's")
    return model.train()


def maskgit_loss(foreground_weight: float = 0.0, grounding_weight: float = 0.0, binding_weight: float = 0.0):
    """The Trainer's loss_fn: MaskGIT's masked-token cross-entropy, tokens that show an
    object weighted 1 + `foreground_weight` (kinema.nn.weighting, per token), plus
    `grounding_weight` x the grounding loss where the batch has its targets (kinema.nn.grounding)
    and `binding_weight` x the swapped-caption hinge where it has negatives (`MaskGit.binding_loss`)."""

    def loss_fn(model: MaskGit, batch: TokenBatch) -> dict[str, torch.Tensor]:
        text, mask = trim_padding(batch.text, batch.text_mask)
        weight = 1 + foreground_weight * batch.foreground.float() if foreground_weight else None
        grounding = (batch.grounding.tokens, batch.grounding.words) if batch.grounding is not None else None
        negatives = None
        if batch.negatives is not None:
            neg_text, neg_mask = trim_padding(batch.negatives.text, batch.negatives.mask)
            negatives = (neg_text, neg_mask, batch.negatives.rows, batch.foreground)
        return model.loss(batch.codes, text, mask, batch.context, batch.has_context, weight, grounding, grounding_weight, negatives, binding_weight)

    return loss_fn


def assemble(tokenizer: CViViT, transformer: MaskGit, output: Path, extra: dict | None = None) -> Path:
    """Write a complete, loadable `phenaki` model folder."""
    from ...text import get_text_encoder

    pipe = PhenakiPipeline(tokenizer, transformer, get_text_encoder(), PhenakiSampler())
    return pipe.save_pretrained(output, extra)


def phenaki(
    tokenizer: Path = typer.Option(..., help="trained C-ViViT: an inference folder or a training checkpoint (copied into OUTPUT/tokenizer; --resume uses the copy)"),
    output: Path = typer.Option(..., "--output", "-o", help="run folder: tokenizer/, checkpoints/, final/, pipeline/, metrics.jsonl"),
    max_steps: MaxSteps = 20_000,
    batch_size: int = typer.Option(16, help="events per micro-batch"),
    grad_accum: GradAccum = 1,
    lr: Lr = 5e-4,
    warmup_steps: WarmupSteps = 500,
    ema_decay: EmaDecay = 0.999,
    save_every: SaveEvery = 1000,
    save_every_minutes: SaveEveryMinutes = 10.0,
    resume: Resume = False,
    init_from: Optional[Path] = typer.Option(None, help="start from the EMA weights of this MaskGIT training checkpoint, or a model folder's transformer (fresh optimizer), e.g. after the tokenizer trained further"),
    seed: Seed = 0,
    dim: int = typer.Option(256),
    depth: int = typer.Option(8),
    story_share: float = typer.Option(0.5, help="share of examples continuing a story from a context frame"),
    data: str = typer.Option("shapes", help="training data: 'shapes' (the Shapes world) or a folder of captioned videos"),
    foreground_weight: float = typer.Option(0.0, help="extra loss weight on tokens whose patch shows an object (a few of 256 tokens)"),
    grounding_weight: float = typer.Option(0.0, help="weight of a loss that a word naming an object is attended from that object's tokens (TokenCompose; Shapes world only); off by default, the README says why"),
    binding_weight: float = typer.Option(0.0, help="weight of a hinge that an event's object tokens be likelier under its caption than under the same words with two objects' shapes or motions swapped (NegCLIP's hard negatives; Shapes world only); off by default, the README says why"),
    reuse_batches: int = typer.Option(0, help="cycle over this many distinct batches, each tokenized once and kept in memory (0 = fresh data every step)"),
    grow_depth: int = typer.Option(0, min=0, help="with --init-from: add this many transformer blocks on top, started as identities (the same predictions, more depth to train)"),
    joint_head: bool = typer.Option(False, "--joint-head", help="predict each token's code with one softmax over the codebook, not one per FSQ digit; from a digit-head --init-from it starts as the same distribution"),
    threads: Threads = None,
    precision: Precision = "auto",
    progress: Progress = True,
    fsdp: Fsdp = False,
    data_workers: DataWorkers = 0,
    max_minutes: MaxMinutes = None,
    scene_mix: SceneMix = None,
    held_out_batches: HeldOutBatches = 0,
) -> None:
    """Train Phenaki's MaskGIT (text + last frame → event tokens) on the Shapes world."""
    from ...text import get_text_encoder

    mix = scene_mix_option(scene_mix, data)  # before anything is written
    held_out_batches = held_out_option(held_out_batches, data)
    if grow_depth and init_from is None:
        raise typer.BadParameter("--grow-depth adds blocks to a trained MaskGIT: give it --init-from (a fresh model takes --depth)")
    if grounding_weight and not is_shapes(data):
        raise typer.BadParameter("--grounding-weight needs the Shapes world's labels (which words name which object); --data is real footage")
    if binding_weight and not is_shapes(data):
        raise typer.BadParameter("--binding-weight needs the Shapes world's captions (which words are whose shape and motion); --data is real footage")
    fresh_or_resumed(output, resume)
    if threads:
        torch.set_num_threads(threads)
    rank, world_size = dist_info()
    tok = run_tokenizer(tokenizer, output, resume, is_main=rank == 0)
    config = MaskGitConfig(fsq_levels=tok.config.fsq_levels, grid=tok.config.grid_size, event_grids=tok.config.token_frames(16), dim=dim, depth=depth, joint_head=joint_head)
    saved = resumed_model_config(output) if resume else None
    torch.manual_seed(seed)  # --seed fixes the initial weights too: a fresh model's, or the blocks --grow-depth adds
    if saved is not None:  # the run's own architecture, whatever --dim/--depth/--init-from say; weights come from disk
        model = ckpt.build_from_config(saved, "checkpoint config.json")
    elif init_from is not None:
        model = maskgit_from_checkpoint(init_from, config)
        if grow_depth:
            model = model.deepened(grow_depth)
        if joint_head:
            model = model.with_joint_head()
        typer.echo(f"weights from {init_from} (EMA); a fresh optimizer and schedule")
    else:
        model = MaskGit(config)
    source = None
    if not is_shapes(data):
        source = load_dataset(data, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, size=tok.config.image_size, frames=16)
    batches = PhenakiData(tok, get_text_encoder(), batch_size=batch_size, seed=seed, rank=rank, story_share=story_share, scene_mix=mix, source=source, reuse=reuse_batches, grounding=grounding_weight > 0, negatives=binding_weight > 0)
    train_config = TrainConfig(
        output=str(output), max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, grad_accum=grad_accum, ema_decay=ema_decay,
        save_every=save_every, save_every_minutes=save_every_minutes, seed=seed, precision=precision, progress=progress, fsdp=fsdp, data_workers=data_workers, max_minutes=max_minutes,
        held_out_batches=held_out_batches,
    )
    params = sum(p.numel() for p in model.parameters())
    typer.echo(f"MaskGIT: {params / 1e6:.2f} M parameters, {model.config.event_tokens} tokens per event + {model.config.context_tokens} of context; {json.dumps(model.config.to_dict())}")
    trained_on = data_label(data)
    # on a GPU the frozen C-ViViT runs there, on batches of pixels the data workers render
    on_device = default_device().type != "cpu" and not reuse_batches
    get_batch, prepare = (batches.clips, batches.tokens) if on_device else (batches.batch, None)
    held_out = dataclasses.replace(batches, rank=HELD_OUT_RANK)
    trainer = Trainer(model, train_config, get_batch, maskgit_loss(foreground_weight, grounding_weight, binding_weight), export_name="transformer", export_extra={"trained_on": trained_on}, prepare=prepare,
                      held_out=held_out.clips if on_device else held_out.batch)
    trainer.train(resume=resume)
    if trainer.is_main:
        folder = assemble(tok, trainer.ema.model, output / "pipeline", {"step": trainer.step, "elapsed_seconds": round(trainer.elapsed, 1), "trained_on": trained_on})
        typer.echo(f"model folder: {folder} (kinema generate --model {folder} ...)")
