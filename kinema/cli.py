"""The `kinema` command line: world | generate | story | train | eval | bench | serve | info.

User mistakes (a bad caption, a missing file, an unknown extension) print one line and
exit 2; only bugs show a traceback. Heavy imports (torch, transformers) happen inside the
commands that need them, so `kinema --help` and `kinema world ...` start fast.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape

from .errors import CheckpointError

app = typer.Typer(help="kinema: text to video (Phenaki, Make-A-Video, Imagen Video, Lumiere).", no_args_is_help=True, add_completion=False)
world_app = typer.Typer(help="The Shapes world: render captions and stories, judge videos.", no_args_is_help=True)
app.add_typer(world_app, name="world")

console = Console(stderr=True)
out = Console()

USAGE_EXIT = 2
MAX_SEED = 2**63 - 1  # what torch and numpy generators both take
WORLD_SOURCES = "a caption or --story FILE"


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's user-facing exceptions into one clear line and exit code 2."""
    try:
        yield
    except typer.Exit:
        raise
    except (UsageError, ValueError, OSError, CheckpointError) as e:
        # an OSError from the system names the path and the reason: "out/x.mp4: Not a directory"
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename is not None and e.strerror else str(e)
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE_EXIT) from None


def _sentences(caption: Optional[str], story: Optional[Path], text: Optional[str] = None, *, sources: str) -> list[str]:
    """The sentences from whichever one input was given; `sources` names this command's
    inputs for the message when none or several are."""
    from .world import read_story, split_story

    given = [x is not None for x in (caption, story, text)]
    if sum(given) != 1:
        raise UsageError(f"give exactly one of {sources}")
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
    seed: Annotated[int, typer.Option(help="Seed for where things are placed.", min=0, max=MAX_SEED)] = 0,
) -> None:
    """Render a caption or a story exactly as the world defines it (the ground truth)."""
    from .io import VideoWriter
    from .world import FPS, parse, render_story

    with user_errors():
        sentences = _sentences(caption, story, sources=WORLD_SOURCES)
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
        sentences = _sentences(caption, story, sources=WORLD_SOURCES)
        verdict = judge(read_video(video).frames, sentences)
    out.print(verdict.report(), highlight=False)
    raise typer.Exit(0 if verdict.passed else 1)


# ---------------------------------------------------------------- generate / story

DEFAULT_MODEL = "phenaki-shapes"


def _progress(description: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)


def _run_pipeline(
    model: str, output: Path, seed: int, options: dict, *, prompt: str | None = None, num_frames: int | None = None, sentences: list[str] | None = None
) -> None:
    """Stream `pipe(prompt, num_frames=...)`, or `pipe.story(sentences)`, to `output` under a
    progress bar. The pipeline checks the input itself (one place for every caller)."""
    import time

    from .pipelines import load_pipeline

    pipe = load_pipeline(model)
    options = {k: v for k, v in options.items() if v is not None}
    start = time.perf_counter()
    with _progress(pipe.name) as bar:
        task = bar.add_task("generate", total=1.0)
        run = {"seed": seed, "output": output, "callback": lambda done, total: bar.update(task, completed=done / total), **options}
        if sentences is None:
            path = pipe(prompt, num_frames=num_frames, **run)
            frames = num_frames or pipe.frames_per_event
        else:
            path = pipe.story(sentences, **run)
            frames = len(sentences) * pipe.frames_per_event
    out.print(f"wrote {path} ({frames} frames, made in {time.perf_counter() - start:.1f} s)", highlight=False)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What happens, e.g. 'a red circle moves up at night'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Video file: .mp4 .webm .gif .npy .png (strip) or a folder.")] = Path("out.mp4"),
    model: Annotated[str, typer.Option(help="A shipped model name (see `kinema info`), 'world', or a model folder.")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Same seed, same model, same machine: same frames.", min=0, max=MAX_SEED)] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps (the model's default if not given).", min=1)] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale.", min=0)] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames: a whole number of events (16 frames each; one if not given); longer clips continue the prompt.")] = None,
) -> None:
    """Make a video from a prompt."""
    with user_errors():
        _run_pipeline(model, output, seed, {"num_inference_steps": steps, "guidance_scale": guidance}, prompt=prompt, num_frames=frames)


@app.command()
def story(
    file: Annotated[Optional[Path], typer.Argument(help="A story file: one sentence per line, or a paragraph split at full stops.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Video file; frames stream to it as they are made.")] = Path("film.mp4"),
    text: Annotated[Optional[str], typer.Option("--text", help="The story as one paragraph, instead of a file.")] = None,
    model: Annotated[str, typer.Option(help="A shipped model name, 'world', or a model folder.")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Same seed, same model, same machine: same frames.", min=0, max=MAX_SEED)] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps per event.", min=1)] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale.", min=0)] = None,
) -> None:
    """Make one unbroken film from a list of sentences (Phenaki's stories)."""
    with user_errors():
        sentences = _sentences(None, file, text, sources="a story FILE or --text PARAGRAPH")
        _run_pipeline(model, output, seed, {"num_inference_steps": steps, "guidance_scale": guidance}, sentences=sentences)


# ---------------------------------------------------------------- bench


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="A shipped model name, 'world', or a model folder.")] = DEFAULT_MODEL,
    runs: Annotated[int, typer.Option(help="Warm clips to time (the median is reported).", min=1)] = 10,
    story_sentences: Annotated[int, typer.Option(help="Sentences in the long story.", min=10)] = 60,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON.")] = None,
    vs: Annotated[Optional[str], typer.Option("--vs", help="Also time another implementation built to the same size: phenaki-pytorch (needs the `vs` extra; see the README).")] = None,
) -> None:
    """Speed and memory on this machine: load, cold start, warm clip, long story, training steps."""
    from rich.table import Table

    from .eval.bench import bench as run_bench
    from .eval.bench import report_json

    with user_errors():
        with console.status("bench") as status:
            report = run_bench(model, warm_runs=runs, story_sentences=story_sentences, vs=vs, progress=lambda what: status.update(f"bench: {what}"))
    table = Table(title=f"kinema bench {model}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in report.rows():
        table.add_row(key, value)
    out.print(table)
    if json_path:
        from .fsutil import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(report_json(report) + "\n")


# ---------------------------------------------------------------- info


@app.command()
def info() -> None:
    """Versions, device, bf16 support, and the models this install can load."""
    import platform

    import torch

    from . import __version__
    from .pipelines import available_models
    from .precision import bf16_is_fast, resolve

    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    where = "cuda" if torch.cuda.is_available() else "cpu"
    with user_errors():  # a bad KINEMA_PRECISION
        precision = resolve(None, where)
    rows = [
        ("kinema", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("device", device),
        ("cpu capability", torch.backends.cpu.get_cpu_capability()),
        ("bf16 kernels", "native" if bf16_is_fast(where) else "none (bf16 would be emulated, many times slower)"),
        ("precision used", f"{precision} (KINEMA_PRECISION=bf16|fp32 overrides)"),
        ("models", ", ".join(available_models()) or "none shipped yet"),
    ]
    for key, value in rows:
        out.print(f"{key:>15}: {value}", highlight=False)


class _LazyGroup(TyperGroup):
    """A command group whose module is imported only when the group is used: `kinema train`
    and `kinema data` import torch at the top of their modules, and `kinema --help` must not
    wait for that. Commands and callback (train's sets up torchrun) come from the real Typer
    app, `target` = (module, attribute), on first use."""

    target: tuple[str, str]

    def _group(self) -> TyperGroup:
        return _real_group(*self.target)

    def list_commands(self, ctx):
        return self._group().list_commands(ctx)

    def get_command(self, ctx, name):
        return self._group().get_command(ctx, name)

    def invoke(self, ctx):
        self.callback = self._group().callback
        return super().invoke(ctx)


@functools.cache
def _real_group(module: str, attribute: str) -> TyperGroup:
    import importlib

    return typer.main.get_group(getattr(importlib.import_module(module), attribute))


def _lazy_typer(module: str, attribute: str) -> typer.Typer:
    group = type("LazyGroup", (_LazyGroup,), {"target": (module, attribute)})
    return typer.Typer(cls=group, no_args_is_help=True)


from .eval.cli import eval_command  # noqa: E402
from .serve.cli import serve_command  # noqa: E402  (fastapi loads only when it serves)

app.command("serve")(serve_command)
app.command("eval")(eval_command)
app.add_typer(_lazy_typer("kinema.data.cli", "data_app"), name="data", help="Real training data: check a folder of captioned videos or images.")
app.add_typer(
    _lazy_typer("kinema.train.cli", "train_app"),
    name="train",
    help="Train tokenizers and models (bf16 where the hardware has it, torchrun for many processes).",
)


def _one_line_warnings() -> None:
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


def main() -> None:
    _one_line_warnings()
    app()


if __name__ == "__main__":
    sys.exit(main())
