"""Options every `kinema train` command takes, written once (typer `Annotated` types)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Threads = Annotated[Optional[int], typer.Option(help="torch CPU threads")]
Precision = Annotated[str, typer.Option(help="bf16 | fp32")]
Progress = Annotated[bool, typer.Option(help="progress bar")]
Fsdp = Annotated[bool, typer.Option("--fsdp", help="under torchrun: shard parameters, gradients and optimizer state over the processes (PyTorch FSDP2) instead of copying them to each (DDP); for models too large for one device")]
DataWorkers = Annotated[int, typer.Option(help="processes that make batches ahead of the step (for a GPU, which outruns one CPU core; 0 = made in the loop)")]
MaxMinutes = Annotated[Optional[float], typer.Option(help="wall-clock budget of this run in minutes: then checkpoint and export final/ as at --max-steps (whose schedule --resume continues)")]
