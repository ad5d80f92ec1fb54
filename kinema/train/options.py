"""Options the `kinema train` commands share, written once (typer `Annotated` types)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Threads = Annotated[Optional[int], typer.Option(help="torch CPU threads")]
Precision = Annotated[str, typer.Option(help="bf16 | fp32")]
Progress = Annotated[bool, typer.Option(help="progress bar")]
Fsdp = Annotated[bool, typer.Option("--fsdp", help="under torchrun: shard parameters, gradients and optimizer state over the processes (PyTorch FSDP2) instead of copying them to each (DDP); for models too large for one device")]
DataWorkers = Annotated[int, typer.Option(help="processes that make batches ahead of the step (for a GPU, which outruns one CPU core; 0 = made in the loop)")]
MaxMinutes = Annotated[Optional[float], typer.Option(help="wall-clock budget of this run in minutes: then checkpoint and export final/ as at --max-steps (whose schedule --resume continues)")]
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
