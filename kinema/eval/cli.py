"""`kinema eval MODEL`: the command; the lead registers it with

    from .eval.cli import eval_command
    app.command("eval")(eval_command)

Heavy imports (torch, the classifier) happen inside the command, so `kinema --help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def eval_command(
    model: Annotated[str, typer.Argument(help="What to score: 'world' (the ground truth), a shipped model's name, or a model folder.")],
    seed: Annotated[int, typer.Option(help="Seed for the prompts drawn and each generation's seed.")] = 0,
    prompts: Annotated[int, typer.Option(help="Prompts per single-clip category (one object, two objects, camera, held-out paraphrases).", min=0)] = 50,
    stories: Annotated[int, typer.Option(help="Stories of --story-length sentences.", min=0)] = 8,
    story_length: Annotated[int, typer.Option(help="Sentences per story.", min=1, max=1000)] = 6,
    long_story: Annotated[bool, typer.Option("--long-story/--no-long-story", help="Also one story of 60 sentences.")] = True,
    fvd: Annotated[bool, typer.Option("--fvd/--no-fvd", help="Compute FVD-shapes (kinema's Shapes classifier; not comparable to published FVD).")] = True,
    fvd_real: Annotated[Optional[int], typer.Option(help="World clips for FVD-shapes' real side (default: as many as generated, at least 100).", min=2)] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the full report (every prompt, its reasons, aggregates, settings, timings) here.")] = None,
    strip: Annotated[Optional[Path], typer.Option("--strip", help="Write PNG frame strips of failures into this folder.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps for every clip (default: the model's own; for a distilled model, other steps use its teacher).", min=1)] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale for every clip (default: the model's own).", min=0.0)] = None,
    reconstruct: Annotated[Optional[int], typer.Option(help="Instead, score the model's tokenizer: the judge on its reconstructions of this many fresh world events (the ceiling of what its generator can pass).", min=1)] = None,
    lexicon: Annotated[bool, typer.Option("--lexicon", help="Instead, probe the model's text encoder: which colour, shape and motion synonyms it reads as their own canonical word (a held-out word it misreads bounds the held-out paraphrases).")] = False,
) -> None:
    """Score a model on the Shapes world: judge pass rates, failures and FVD-shapes.

    Pass rates per category come with 95 % intervals, beside the commonest failures,
    FVD-shapes and flicker. `kinema eval world` is the upper bound."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..cli import console, user_errors
    from ..pipelines import load_pipeline
    from .scoreboard import evaluate

    with user_errors():
        pipe = load_pipeline(model)
        if reconstruct is not None:
            return _reconstruct(pipe, model, reconstruct, seed, json_path)
        if lexicon:
            return _lexicon(pipe, model, json_path)
        bar = Progress(
            TextColumn("[bold]eval[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        )
        with bar:
            task = bar.add_task(model, total=None)
            report = evaluate(
                pipe, prompts=prompts, stories=stories, story_length=story_length, long_story=60 if long_story else None,
                seed=seed, fvd=fvd, fvd_real=fvd_real, strip_dir=strip,
                options={k: v for k, v in (("num_inference_steps", steps), ("guidance_scale", guidance)) if v is not None},
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if json_path is not None:
            report.write_json(json_path)
    out = Console(width=max(Console().width, 140))
    out.print(report.table())
    for line in report.notes():
        out.print(line, highlight=False)
    if json_path is not None:
        console.print(f"wrote {json_path}")
    if strip is not None:
        written = sum(len(r.strips) for r in report.results)
        console.print(f"wrote {written} failure strip(s) to {strip}")


def _reconstruct(pipe, model: str, clips: int, seed: int, json_path: Path | None) -> None:
    """`kinema eval MODEL --reconstruct N`: the tokenizer's judge pass rate and PSNR."""
    import json

    from rich.table import Table

    from ..cli import console
    from ..fsutil import atomic_path
    from .reconstruction import score_reconstructions

    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{model} has no video tokenizer to score (--reconstruct is for token models such as Phenaki)")
    with console.status(f"reconstructing {clips} world events"):
        score = score_reconstructions(tokenizer, clips=clips, seed=seed)
    table = Table(title=f"{model}: tokenizer reconstructions of {clips} fresh events")
    for column in ("kind", "pass", "passed"):
        table.add_column(column)
    for kind, (passed, n) in sorted(score.by_kind.items()):
        table.add_row(kind, f"{100 * passed / n:.1f} %", f"{passed}/{n}")
    low, high = score.ci95
    table.add_row("all", f"{100 * score.rate:.1f} % ({100 * low:.1f}-{100 * high:.1f})", f"{score.passed}/{score.clips}")
    console.print(table)
    console.print(f"PSNR {score.psnr_db:.2f} dB; commonest failures: " + ("; ".join(f"{p} ({c})" for p, c in score.failures) or "none"), highlight=False)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"model": model, "seed": seed, "reconstruction": score.to_dict()}, indent=2) + "\n")
        console.print(f"wrote {json_path}")


def _lexicon(pipe, model: str, json_path: Path | None) -> None:
    """`kinema eval MODEL --lexicon`: how the model's text encoder reads the world's synonyms."""
    import json

    from rich.table import Table

    from ..cli import console
    from ..fsutil import atomic_path
    from .lexicon import probe_lexicon

    encoder = getattr(pipe, "text_encoder", None)
    if encoder is None:
        raise ValueError(f"{model} has no text encoder to probe (--lexicon is for text-conditioned models)")
    score = probe_lexicon(encoder)
    table = Table(title=f"{model}: synonyms its text encoder ({encoder.name}) reads as their canonical word")
    for column in ("words", "split", "read", "misread (reads as)"):
        table.add_column(column)
    for (kind, split), (read, n) in score.read.items():
        wrong = ", ".join(f"{w} ({a})" for k, s, w, a in score.misread if (k, s) == (kind, split))
        table.add_row(kind, split, f"{read}/{n}", wrong or "—")
    console.print(table)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"model": model, "text_encoder": encoder.name, "lexicon": score.to_dict()}, indent=2) + "\n")
        console.print(f"wrote {json_path}")
