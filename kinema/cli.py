"""The `kinema` command line: world | generate | story | train | eval | bench | serve | info.

User mistakes (a bad caption, a missing file, an unknown extension) print one line and
exit 2; only bugs show a traceback. Heavy imports (torch, transformers) happen inside the
commands that need them, so `kinema --help` and `kinema world ...` start fast.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

app = typer.Typer(help="kinema: text to video (Phenaki, Make-A-Video, Imagen Video, Lumiere).", no_args_is_help=True, add_completion=False)
world_app = typer.Typer(help="The Shapes world: render captions and stories, judge videos.", no_args_is_help=True)
app.add_typer(world_app, name="world")

console = Console(stderr=True)
out = Console()

USAGE_EXIT = 2


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's user-facing exceptions into one clear line and exit code 2."""
    try:
        yield
    except typer.Exit:
        raise
    except (UsageError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE_EXIT) from None


def _sentences(caption: Optional[str], story: Optional[Path], text: Optional[str] = None) -> list[str]:
    from .world import read_story, split_story

    given = [x is not None for x in (caption, story, text)]
    if sum(given) != 1:
        raise UsageError("give exactly one of a caption, --story FILE or --text PARAGRAPH")
    if caption is not None:
        if not caption.strip():
            raise UsageError("the caption is empty")
        return [caption]
    if text is not None:
        return split_story(text)
    if not story.exists():
        raise FileNotFoundError(f"no such story file: {story}")
    return read_story(story)


# ---------------------------------------------------------------- world


@world_app.command("render")
def world_render(
    caption: Annotated[Optional[str], typer.Argument(help="A caption, e.g. 'a red circle moves up at night'.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Video file: .mp4 .webm .gif .npy .png (strip) or a folder.")] = Path("world.mp4"),
    story: Annotated[Optional[Path], typer.Option("--story", help="A story file: one sentence per line, or a paragraph.")] = None,
    size: Annotated[int, typer.Option(help="Frame side in pixels.", min=16, max=1024)] = 64,
    seed: Annotated[int, typer.Option(help="Seed for where things are placed.")] = 0,
) -> None:
    """Render a caption or a story exactly as the world defines it (the ground truth)."""
    from .io import VideoWriter
    from .world import FPS, parse, render_story

    with user_errors():
        sentences = _sentences(caption, story)
        meanings = [parse(s) for s in sentences]
        with VideoWriter(output, fps=FPS) as writer:
            for frames in render_story(meanings, seed=seed, size=size):
                writer.write(frames)
    out.print(f"wrote {output} ({len(meanings)} event(s), {len(meanings) * 16} frames at {size}x{size})")


@world_app.command("judge")
def world_judge(
    video: Annotated[Path, typer.Argument(help="The video to judge (.npy is lossless; .mp4/.webm/.gif work too).")],
    caption: Annotated[Optional[str], typer.Option("--caption", "-c", help="The caption the video should obey.")] = None,
    story: Annotated[Optional[Path], typer.Option("--story", help="A story file the video should obey.")] = None,
) -> None:
    """Judge a video against its caption or story: exit 0 if it obeys, 1 if not, 2 on bad input."""
    from .io import read_video
    from .world import judge

    with user_errors():
        sentences = _sentences(caption, story)
        verdict = judge(read_video(video).frames, sentences)
    out.print(verdict.report(), highlight=False)
    raise typer.Exit(0 if verdict.passed else 1)


# ---------------------------------------------------------------- info


@app.command()
def info() -> None:
    """Versions, device, bf16 support, and the models this install can load."""
    import platform

    import torch

    from . import __version__
    from .pipelines import available_models

    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else torch.backends.mkldnn.is_available()
    rows = [
        ("kinema", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("device", device),
        ("cpu capability", torch.backends.cpu.get_cpu_capability()),
        ("bf16 autocast", "yes" if bf16 else "no"),
        ("models", ", ".join(available_models()) or "none shipped yet"),
    ]
    for key, value in rows:
        out.print(f"{key:>15}: {value}", highlight=False)


from .train.cli import train_app  # noqa: E402  (its commands import torch lazily)

app.add_typer(train_app, name="train", help="Train tokenizers and models (bf16 on CPU, torchrun for many processes).")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
