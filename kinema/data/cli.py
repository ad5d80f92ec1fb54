"""`kinema data check PATH`: is this folder of captioned videos (or images) ready to train on?

It reads the caption file and every file's header (no frame is decoded) and prints what the
datasets will do with them: usable clips, total duration, a table of sizes and aspect
buckets, the fps range, unreadable files, missing or empty captions and videos too short
for a `--frames` / `--fps` clip. Exit 0 if at least one clip is usable; 2 with one line
otherwise (a bad path, no caption file, nothing usable).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(help="Real training data: check a folder of captioned videos or images.", no_args_is_help=True)

SHOWN = 20  # unreadable files listed by name before "... and N more"


@dataclass
class DatasetReport:
    caption_file: Path
    kind: str  # "videos" | "images"
    rows: int
    frames: int
    fps: float
    malformed_lines: list[int] = field(default_factory=list)
    empty_captions: list[str] = field(default_factory=list)  # readable or not
    uncaptioned_files: list[str] = field(default_factory=list)  # media files in the folder with no row
    usable: list = field(default_factory=list)  # MediaInfo of files a clip can be drawn from
    too_short: list = field(default_factory=list)  # MediaInfo of captioned videos shorter than a clip
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason

    @property
    def clip_seconds(self) -> float:
        return self.frames / self.fps

    def disjoint_clips(self) -> int:
        """Clips that fit without overlapping, summed over the usable videos."""
        if self.kind == "images":
            return len(self.usable)
        return sum(max(1, math.floor(r.duration / self.clip_seconds)) for r in self.usable)


def scan_dataset(path: str | Path, *, frames: int, fps: float) -> DatasetReport:
    """Probe every file a dataset's caption file names, as the datasets would."""
    from . import is_image_dataset
    from .images import probe_image
    from .video_folder import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaInfo, aspect_bucket, is_long_enough, probe_video, read_captions

    if frames < 1 or not fps > 0:
        raise ValueError(f"--frames must be >= 1 and --fps > 0, got {frames} and {fps}")
    captions = read_captions(path)
    kind = "images" if is_image_dataset(path) else "videos"
    report = DatasetReport(captions.file, kind, len(captions.rows), frames, fps, malformed_lines=captions.malformed)
    listed = set()
    for row in captions.rows:
        file = captions.root / row.path
        listed.add(file.resolve())
        if not row.caption:
            report.empty_captions.append(row.path)
        try:
            if kind == "images":
                w, h = probe_image(file)
                info = MediaInfo(file, row.caption, w, h, bucket=aspect_bucket(w, h))
            else:
                facts = probe_video(file)
                long_enough = is_long_enough(facts["duration"], facts["fps"], frames, fps)
                info = MediaInfo(file, row.caption, facts["width"], facts["height"], facts["fps"], facts["duration"], aspect_bucket(facts["width"], facts["height"]), long_enough)
        except ValueError as err:
            report.unreadable[row.path] = str(err)
            continue
        if not row.caption:
            continue
        (report.usable if info.long_enough else report.too_short).append(info)
    extensions = IMAGE_EXTENSIONS if kind == "images" else VIDEO_EXTENSIONS
    for file in sorted(captions.root.rglob("*")):
        if file.suffix.lower() in extensions and file.is_file() and file.resolve() not in listed:
            report.uncaptioned_files.append(str(file.relative_to(captions.root)))
    return report


def _print_report(report: DatasetReport) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    unit = "images" if report.kind == "images" else "videos"
    summary = Table(title=f"{report.caption_file}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("caption rows", str(report.rows) + (f" ({len(report.malformed_lines)} malformed: lines {_few(report.malformed_lines)})" if report.malformed_lines else ""))
    summary.add_row(f"usable {unit}", str(len(report.usable)))
    if report.kind == "videos":
        summary.add_row("usable clips", f"{report.disjoint_clips()} without overlap ({report.frames} frames at {report.fps:g} fps = {report.clip_seconds:.2f} s each)")
        duration = sum(r.duration for r in report.usable)
        summary.add_row("total duration", f"{duration:.1f} s ({duration / 3600:.2f} h)")
        rates = [r.fps for r in report.usable + report.too_short]
        if rates:
            summary.add_row("fps range", f"{min(rates):.4g} to {max(rates):.4g}")
        summary.add_row("too short for a clip", str(len(report.too_short)))
    summary.add_row("unreadable", str(len(report.unreadable)))
    summary.add_row("empty captions", str(len(report.empty_captions)))
    summary.add_row(f"{unit} without a caption row", str(len(report.uncaptioned_files)))
    out.print(summary)

    sizes = Counter((r.width, r.height, r.bucket) for r in report.usable + report.too_short)
    if sizes:
        table = Table(title="sizes (display width x height)", title_justify="left")
        table.add_column("size", justify="right")
        table.add_column("aspect bucket")
        table.add_column(unit, justify="right")
        for (w, h, bucket), n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"{w}x{h}", bucket, str(n))
        out.print(table)
    if report.unreadable:
        out.print("unreadable files:", highlight=False)
        for name, reason in list(report.unreadable.items())[:SHOWN]:
            out.print(f"  {name}: {reason}", highlight=False, soft_wrap=True)
        if len(report.unreadable) > SHOWN:
            out.print(f"  ... and {len(report.unreadable) - SHOWN} more", highlight=False)
    if report.too_short:
        out.print(f"too short for {report.clip_seconds:.2f} s: " + _few([Path(r.path).name for r in report.too_short]), highlight=False, soft_wrap=True)
    if report.empty_captions:
        out.print("empty captions: " + _few(report.empty_captions), highlight=False, soft_wrap=True)


def _few(items: list, shown: int = 5) -> str:
    text = ", ".join(str(x) for x in items[:shown])
    return text + (f", ... ({len(items) - shown} more)" if len(items) > shown else "")


@data_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="A folder with captions.csv / captions.jsonl, or such a file.")],
    frames: Annotated[int, typer.Option(help="Frames per training clip.", min=1)] = 16,
    fps: Annotated[float, typer.Option(help="Frame rate clips are sampled at.", min=0.001)] = 8.0,
) -> None:
    """Check a folder of captioned videos (or images) for training: exit 0 if at least one clip is usable, 2 if none."""
    from ..cli import user_errors

    with user_errors():
        report = scan_dataset(path, frames=frames, fps=fps)
        _print_report(report)
        if not report.usable:
            raise ValueError(
                f"no usable {report.kind} in {path}: {len(report.unreadable)} unreadable, {len(report.too_short)} too short "
                f"for {frames} frames at {fps:g} fps, {len(report.empty_captions)} with an empty caption"
            )
