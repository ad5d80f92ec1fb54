"""Options the `kinema train` commands share, written once (typer `Annotated` types)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

# the training loop (kinema.train.TrainConfig); each command gives its own defaults
MaxSteps = Annotated[int, typer.Option(help="optimizer steps (the cosine LR schedule ends here)")]
GradAccum = Annotated[int, typer.Option(help="micro-batches per optimizer step")]
Lr = Annotated[float, typer.Option(help="peak learning rate (AdamW)")]
WarmupSteps = Annotated[int, typer.Option(help="steps of linear warmup to --lr")]
MinLrRatio = Annotated[float, typer.Option(help="the cosine decays to --lr x this at --max-steps")]
EmaDecay = Annotated[float, typer.Option(help="decay of the weights' moving average (the EMA is what final/ exports)")]
SaveEvery = Annotated[int, typer.Option(help="steps between checkpoints")]
SaveEveryMinutes = Annotated[float, typer.Option(help="also checkpoint after this many minutes (0 = off)")]
Resume = Annotated[bool, typer.Option("--resume", help="continue from the newest valid checkpoint in --output")]
Seed = Annotated[int, typer.Option(help="seed of the initialisation and the data stream")]
ExportDtype = Annotated[Optional[str], typer.Option(help="dtype of final/ weights (bfloat16 halves the size)")]
# the machine and the run
Threads = Annotated[Optional[int], typer.Option(help="torch CPU threads")]
Precision = Annotated[str, typer.Option(help="auto (bf16 autocast where the hardware has it, else fp32) | bf16 | fp32")]
Progress = Annotated[bool, typer.Option(help="progress bar")]
Fsdp = Annotated[bool, typer.Option("--fsdp", help="under torchrun: shard parameters, gradients and optimizer state over the processes (PyTorch FSDP2) instead of copying them to each (DDP); for models too large for one device")]
DataWorkers = Annotated[int, typer.Option(help="processes that make batches ahead of the step (for a GPU, which outruns one CPU core; 0 = made in the loop)")]
MaxMinutes = Annotated[Optional[float], typer.Option(help="wall-clock budget of this run in minutes: then checkpoint and export final/ as at --max-steps (whose schedule --resume continues)")]
HeldOutBatches = Annotated[int, typer.Option(min=0, help="Shapes world: at each checkpoint, score the EMA on this many held-out batches, the same examples with the same draws each time (logged as held_out_<term>; 0 = off): the training loss is too noisy to show a fine-tune losing what the model drew well")]
SceneMix = Annotated[Optional[str], typer.Option(help="Shapes world: how often a single-scene example is of each kind, e.g. 'two objects=2' (the others weigh 1; default: all equally often)")]


def scene_mix_option(text: str | None, data: str) -> dict[str, float] | None:
    """--scene-mix as weights per scene kind, or a one-line usage error."""
    from ..data import is_shapes
    from ..data.shapes import parse_scene_mix

    if text is None:
        return None
    if not is_shapes(data):
        raise typer.BadParameter("--scene-mix weights the Shapes world's scene kinds; it does not apply to --data folders")
    try:
        return parse_scene_mix(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def fresh_or_resumed(output, resume: bool) -> None:
    """A fresh run into a folder with another run's checkpoints, as a one-line usage error
    before anything is loaded or written (`kinema.train.trainer.check_output`)."""
    from .trainer import check_output

    try:
        check_output(output, resume)
    except FileExistsError as e:
        raise typer.BadParameter(str(e), param_hint="--output") from None


def config_overrides(text: str, config_cls: type, option: str = "--config-json") -> dict:
    """`--config-json` as a dict of `config_cls` fields; a user's typo is one clear line."""
    import dataclasses
    import json

    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{option} is not JSON ({err.msg} at character {err.pos}): {text}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"{option} must be a JSON object of {config_cls.__name__} fields, got {text}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{option}: {config_cls.__name__} has no field {', '.join(map(repr, unknown))}; it has {', '.join(sorted(fields))}")
    return overrides


def reports_user_errors(command):
    """Wrap a train command so a user's mistake (a bad option value, a missing or damaged
    checkpoint) is one line and exit code 2, as in the rest of the CLI."""
    import functools

    @functools.wraps(command)
    def run(*args, **kwargs):
        from ..cli import user_errors  # the CLI imports the train commands lazily: no cycle

        with user_errors():
            return command(*args, **kwargs)

    return run


def held_out_option(batches: int, data: str) -> int:
    """--held-out-batches, or a one-line usage error where there is no held-out stream."""
    from ..data import is_shapes

    if batches and not is_shapes(data):
        raise typer.BadParameter("--held-out-batches draws its batches from the Shapes world; --data folders have no held-out stream")
    return batches
