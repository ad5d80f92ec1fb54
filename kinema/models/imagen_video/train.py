"""`kinema train imagen-video --stage base|tsr|ssr|distill|assemble -o OUTPUT`.

One cascade folder holds one run per stage, trained separately (in any order, or on
different machines) with the one Trainer:

    OUTPUT/base/            checkpoints/, final/ (component "base"), metrics.jsonl
    OUTPUT/tsr/   OUTPUT/ssr/
    OUTPUT/base_distilled/  round-032/, round-016/, round-008/ (one Trainer run per halving), final/
    OUTPUT/pipeline/        the loadable model folder, (re)written whenever base, tsr and ssr exist
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import torch
import typer

from ... import checkpoint as ckpt
from ...data import data_label, is_shapes, load_dataset
from ...diffusion import DiffusionBatch, GaussianDiffusion, distillation_loss, halving_schedule, make_student, step_grid
from ...nn.unet import VideoUNet, VideoUNetConfig
from ...pipelines import SHAPES_WORLD
from ...train.distributed import dist_info
from ...train.options import (
    DataWorkers, ExportDtype, Fsdp, GradAccum, HeldOutBatches, Lr, MaxMinutes, Precision, Progress, SaveEvery, SaveEveryMinutes,
    SceneMix, Seed, Threads, WarmupSteps, config_overrides, fresh_or_resumed, held_out_option, scene_mix_option,
)
from ...precision import default_device
from ...train.trainer import HELD_OUT_RANK, TrainConfig, Trainer, load_trained, resumed_model_config
from .data import DIRECTION_NEGATIVES, STAGES, ImagenVideoData, stage_config
from .pipeline import STAGE_ORDER, ImagenVideoPipeline, ImagenVideoSampler


def diffusion_loss(diffusion: GaussianDiffusion, cond_drop_prob: float, foreground_weight: float = 0.0, weight_predicted_foreground: bool = False, direction_weight: float = 0.0):
    """The Trainer's loss_fn for one stage: v-prediction MSE, text dropped with a probability,
    objects weighted up by `foreground_weight` (and the objects the stage itself draws, with
    `weight_predicted_foreground`), plus `direction_weight` x the hinge against captions with
    their motion reversed where the batch has them (`GaussianDiffusion.loss`'s negatives)."""

    def loss_fn(model: VideoUNet, batch: DiffusionBatch) -> dict[str, torch.Tensor]:
        return diffusion.loss(
            model, batch.x0, batch.cond, cond_drop_prob=cond_drop_prob,
            foreground_weight=foreground_weight, weight_predicted_foreground=weight_predicted_foreground,
            negatives=batch.negative, negative_weight=direction_weight,
        )

    return loss_fn


def load_stage(path: Path, name: str) -> VideoUNet:
    """A stage from an inference folder (model_index.json with component `name`) or a
    training checkpoint folder (its EMA weights)."""
    path = Path(path)
    model = load_trained(path, name)
    if not isinstance(model, VideoUNet):
        raise ckpt.CheckpointError(f"{path}: holds a {type(model).__name__}, not a VideoUNet")
    return model.float().eval()


def stage_from(path: Path, stage: str) -> VideoUNet:
    """A stage's weights to train on (--init-from): the stage's component of a model folder,
    or a checkpoint's EMA; refused if its shapes are another stage's."""
    try:
        model = load_stage(path, stage)
    except (ckpt.CheckpointError, OSError) as err:
        raise typer.BadParameter(f"--init-from: {err}") from err
    spec, got = STAGES[stage], model.config
    if (got.frames, got.sample_size, got.cond_channels, got.noise_aug) != (spec.frames, spec.size, spec.cond_channels, spec.noise_aug):
        raise typer.BadParameter(f"--init-from {path}: a {got.frames}x{got.sample_size}x{got.sample_size} stage, not {stage} ({spec.frames}x{spec.size}x{spec.size})")
    return model.train()


def assemble(output: Path, sampler: ImagenVideoSampler | None = None) -> Path | None:
    """Write OUTPUT/pipeline from the finished stages under OUTPUT; None until base, tsr and
    ssr all exist. Distilled stages are included with the step counts they were distilled to."""
    from ...text import get_text_encoder

    output = Path(output)
    finals = {name: output / name / "final" for name in (*STAGE_ORDER, *(f"{s}_distilled" for s in STAGE_ORDER))}
    if not all((finals[s] / ckpt.MODEL_INDEX).is_file() for s in STAGE_ORDER):
        return None
    sampler = sampler or ImagenVideoSampler()
    stages, trained = {}, {}
    for name, folder in finals.items():
        if (folder / ckpt.MODEL_INDEX).is_file():
            stages[name] = load_stage(folder, name)
            index = ckpt.read_json(folder / ckpt.MODEL_INDEX)
            trained[name] = {"step": index.get("step"), "elapsed_seconds": index.get("elapsed_seconds"), "trained_on": index.get("trained_on", SHAPES_WORLD)}
            if "distilled_steps" in index:
                sampler.distilled_steps[name.removesuffix("_distilled")] = int(index["distilled_steps"])
    pipe = ImagenVideoPipeline(stages, get_text_encoder(), sampler)
    data = {t["trained_on"] for t in trained.values()}
    return pipe.save_pretrained(output / "pipeline", {"trained_on": data.pop() if len(data) == 1 else "mixed", "stages": trained})


def imagen_video(
    stage: str = typer.Option(..., help="base | tsr | ssr | distill | assemble"),
    output: Path = typer.Option(..., "--output", "-o", help="cascade folder: one run per stage under it; pipeline/ appears once base, tsr and ssr are trained"),
    max_steps: int = typer.Option(5000, help="optimizer steps (for distill: per halving round)"),
    batch_size: int = typer.Option(8, help="clips per micro-batch"),
    grad_accum: GradAccum = 1,
    lr: Lr = 3e-4,
    warmup_steps: WarmupSteps = 200,
    ema_decay: float = typer.Option(0.999, help="EMA decay (distill rounds are short: 0.995 suits them)"),
    save_every: SaveEvery = 500,
    save_every_minutes: SaveEveryMinutes = 10.0,
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint (distill: skips finished rounds)"),
    seed: Seed = 0,
    preset: str = typer.Option("small", help="stage size: small | tiny"),
    config_json: str = typer.Option("{}", help='VideoUNetConfig overrides as JSON, e.g. \'{"channels": 64}\''),
    cond_drop: float = typer.Option(0.1, help="share of examples trained without text (classifier-free guidance)"),
    foreground_weight: float = typer.Option(0.0, help="extra loss weight on pixels that are not backdrop (small objects; kinema.nn.weighting); distill: give the teacher's"),
    weight_predicted_foreground: bool = typer.Option(False, "--weight-predicted-foreground", help="weight up the objects the stage itself draws too (its x0 estimate's foreground), so a false object costs as much as a missing one"),
    story_share: float = typer.Option(0.3, help="share of examples that continue a story from the previous last frame"),
    direction_weight: float = typer.Option(0.0, help="base: weight of a hinge that a clip be denoised better under its caption than under the caption with its motion sent another way (--direction-negatives; Shapes world only)"),
    direction_negatives: str = typer.Option("reversed", help="with --direction-weight: 'reversed' (right/left, up/down, grows/shrinks) or 'wrong-way' (the reverse or, for a move, either way across its axis, drawn at random)"),
    data: str = typer.Option("shapes", help="training data: 'shapes' (the Shapes world) or a folder of captioned videos"),
    init_from: Optional[Path] = typer.Option(None, help="start the stage from these weights (a model folder with the stage, or a training checkpoint; fresh optimizer and schedule), e.g. to go on where a run on another machine stopped"),
    teacher: Optional[Path] = typer.Option(None, help="distill: the teacher (inference folder or checkpoint); default OUTPUT/<distill-stage>/final"),
    distill_stage: str = typer.Option("base", help="distill: which stage to distill"),
    teacher_steps: int = typer.Option(64, help="distill: DDIM steps of the teacher"),
    student_steps: int = typer.Option(8, help="distill: DDIM steps of the final student (halved round by round)"),
    guidance: Optional[float] = typer.Option(None, help=f"distill: classifier-free guidance of the teacher in the first round (baked into the student); default: the stage's own sampling guidance (base {ImagenVideoSampler.guidance_scale:g}, tsr and ssr {ImagenVideoSampler.sr_guidance_scale:g})"),
    threads: Threads = None,
    precision: Precision = "auto",
    export_dtype: ExportDtype = "bfloat16",
    progress: Progress = True,
    fsdp: Fsdp = False,
    data_workers: DataWorkers = 0,
    max_minutes: MaxMinutes = None,
    scene_mix: SceneMix = None,
    held_out_batches: HeldOutBatches = 0,
) -> None:
    """Train one stage of the Imagen Video cascade (base, tsr, ssr), distill one, or assemble them."""
    from ...text import get_text_encoder

    if threads:
        torch.set_num_threads(threads)
    if stage not in (*STAGES, "distill", "assemble"):
        raise typer.BadParameter(f"--stage must be base, tsr, ssr, distill or assemble, not {stage!r}")
    if weight_predicted_foreground and (stage not in STAGES or not foreground_weight):
        raise typer.BadParameter("--weight-predicted-foreground weights a stage's training loss: it needs --stage base, tsr or ssr and --foreground-weight above 0")
    if direction_weight and (stage != "base" or not is_shapes(data)):
        raise typer.BadParameter("--direction-weight trains the base on the Shapes world's captions (which words say a motion's direction): it needs --stage base and --data shapes")
    if direction_negatives not in DIRECTION_NEGATIVES:
        raise typer.BadParameter(f"--direction-negatives must be one of {', '.join(DIRECTION_NEGATIVES)}, not {direction_negatives!r}")
    output = Path(output)
    if stage == "assemble":
        folder = assemble(output)
        if folder is None:
            raise typer.BadParameter(f"{output} lacks a finished stage: train base, tsr and ssr first (each writes OUTPUT/<stage>/final)")
        typer.echo(f"model folder: {folder}")
        return
    mix = scene_mix_option(scene_mix, data)
    held_out_batches = held_out_option(held_out_batches, data)
    diffusion = ImagenVideoSampler().diffusion()
    rank, world_size = dist_info()
    target = distill_stage if stage == "distill" else stage
    if target not in STAGES:
        raise typer.BadParameter(f"--distill-stage must be base, tsr or ssr, not {target!r}")
    source = None
    if not is_shapes(data):
        source = load_dataset(data, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, size=64, frames=16)
    trained_on = data_label(data)
    batches = ImagenVideoData(target, get_text_encoder(), diffusion, batch_size=batch_size, seed=seed, rank=rank, story_share=story_share, scene_mix=mix, source=source, negatives=direction_negatives if direction_weight > 0 else None)
    # on a GPU the captions are encoded there, on the batches the data workers render
    on_device = default_device().type != "cpu"
    get_batch, prepare = (batches.examples, batches.encode_text) if on_device else (batches.batch, None)
    held_out = dataclasses.replace(batches, rank=HELD_OUT_RANK)
    held_out_batch = held_out.examples if on_device else held_out.batch

    def train_config(run: Path, **kw) -> TrainConfig:
        return TrainConfig(
            output=str(run), max_steps=max_steps, lr=lr, warmup_steps=warmup_steps, grad_accum=grad_accum, ema_decay=ema_decay,
            save_every=save_every, save_every_minutes=save_every_minutes, seed=seed, precision=precision, progress=progress,
            export_dtype=export_dtype, fsdp=fsdp, data_workers=data_workers, max_minutes=max_minutes, held_out_batches=held_out_batches, **kw,
        )

    if stage != "distill":
        fresh_or_resumed(output / stage, resume)
        saved = resumed_model_config(output / stage) if resume else None
        if saved is not None:  # the run's own architecture; the weights come from disk
            model = ckpt.build_from_config(saved, "checkpoint config.json")
        elif init_from is not None:
            model = stage_from(init_from, stage)
            typer.echo(f"weights from {init_from} (EMA); a fresh optimizer and schedule")
        else:
            torch.manual_seed(seed)  # --seed fixes the initial weights too
            model = VideoUNet(stage_config(stage, preset, **config_overrides(config_json, VideoUNetConfig)))
        typer.echo(f"{stage}: {model.num_parameters() / 1e6:.2f} M parameters; {json.dumps(model.config.to_dict())}")
        trainer = Trainer(model, train_config(output / stage), get_batch, diffusion_loss(diffusion, cond_drop, foreground_weight, weight_predicted_foreground, direction_weight), export_name=stage,
                          export_extra={"trained_on": trained_on, "stage": stage}, prepare=prepare, held_out=held_out_batch)
        trainer.train(resume=resume)
    else:
        name = f"{target}_distilled"
        if guidance is None:  # the guidance the cascade samples this stage at, which the student stands in for
            guidance = ImagenVideoSampler().guidance(target)
        schedule = halving_schedule(teacher_steps, student_steps)
        step_grid(teacher_steps, diffusion)  # a teacher step count the schedule cannot halve is refused before any load
        source = teacher or output / target / "final"
        try:
            teacher_model = load_stage(source, target).to(default_device())  # where the student trains
        except (ckpt.CheckpointError, OSError) as err:
            hint = "" if teacher else f" (train --stage {target} into {output} first, or name one with --teacher)"
            raise ValueError(f"no {target} teacher to distil at {source}{hint}: {err}") from None
        for i, steps in enumerate(schedule):
            run = output / name / f"round-{steps:03d}"
            if resume and (run / "final" / ckpt.MODEL_INDEX).is_file():
                teacher_model = load_stage(run / "final", name).to(default_device())
                continue
            fresh_or_resumed(run, resume)
            typer.echo(f"distilling {target}: {steps * 2} -> {steps} DDIM steps")
            student = make_student(teacher_model)
            loss = distillation_loss(teacher_model, diffusion, steps, teacher_guidance=guidance if i == 0 else 1.0, foreground_weight=foreground_weight)
            # the student always sees its text (guidance is baked in), so its null-text
            # embeddings get no gradient: DDP must be told, or its next step fails
            trainer = Trainer(student, train_config(run, find_unused_parameters=True), get_batch, loss, export_name=name,
                              export_extra={"distilled_steps": steps, "teacher_guidance": guidance}, prepare=prepare, held_out=held_out_batch)
            trainer.train(resume=resume)
            teacher_model = trainer.ema.model.eval()
        if rank == 0:
            ckpt.save_pretrained(output / name / "final", {name: teacher_model},
                                 index_extra={"distilled_steps": student_steps, "teacher_guidance": guidance, "trained_on": trained_on},
                                 dtype=getattr(torch, export_dtype) if export_dtype else None)
    if rank == 0:
        folder = assemble(output)
        typer.echo(f"model folder: {folder} (kinema generate --model {folder} ...)" if folder else f"{stage} done; train the other stages into {output} to get a model folder")
