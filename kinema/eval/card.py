"""Model cards: a shipped model's README.md, written from what was measured.

A card holds the exact commands that trained the model, its steps and wall time (read
from the folder's model_index.json), the machine, and the `kinema eval` / `kinema bench`
reports as they came out (their JSON files), so no number in it is typed by hand.

    python -m kinema.eval.card kinema/pretrained/phenaki-shapes --title "Phenaki (Shapes)" \\
        --command "kinema train tokenizer ..." --command "kinema train phenaki ..." \\
        --run "tokenizer=~/kinema-runs/tok/checkpoints/step-004000" --run "MaskGIT=..." \\
        --eval eval.json --bench bench.json --hardware "2-core CPU (AMD EPYC), bf16"

Each `--run LABEL=CHECKPOINT` reads the steps and training wall time from that training
checkpoint's trainer_state.json (or from the model_index.json of a folder exported with them).

A model trained in rounds outlives its run folders (they sit outside the repo and may be gone
by the next round), so `--update` reads the card already in the folder and keeps its title,
notes, hardware, commands and run rows: the new `--command` and `--run` are appended to them,
`--notes` and `--hardware` replace them, the index and size are written afresh, and the
eval and bench sections are written from the reports given now or else kept as they were.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..fsutil import atomic_path
from .scoreboard import SINGLE_CATEGORIES


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


_RUNS_HEADER = ["| run | Steps | Wall time |", "|---|---|---|"]


@dataclass
class Card:
    """The hand-kept parts of a card: what `--update` carries from one round to the next."""

    title: str
    notes: str = ""
    hardware: str = ""
    commands: list[str] = field(default_factory=list)
    run_rows: list[str] = field(default_factory=list)  # the runs table's rows, as written
    scores: str = ""  # the "## Judge scores" section, as written
    speed: str = ""  # the "## Speed" section, as written


def read_card(folder: str | Path) -> Card:
    """Parse a card that `write_card` wrote (its notes may hold any markdown but a `## Training`)."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: --update needs a card to update")
    text = path.read_text()
    head, sep, training = text.partition("\n## Training\n")
    if not sep or not head.startswith("# "):
        raise ValueError(f"{path} is not a card written by kinema.eval.card (no title or no '## Training')")
    title, _, notes = head[2:].partition("\n")
    hardware = re.search(r"^Hardware: (.*)\.$", training, re.M)
    block = re.search(r"^```bash\n(.*?)^```$", training, re.M | re.S)
    runs_at = training.find(_RUNS_HEADER[0])
    rows = []
    if runs_at >= 0:
        for line in training[runs_at:].splitlines()[2:]:
            if not line.startswith("| "):
                break
            rows.append(line)
    sections = {part.split("\n", 1)[0]: "## " + part.strip() for part in training.split("\n## ")[1:]}
    scores = next((v for k, v in sections.items() if k.startswith("Judge scores")), "")
    speed = next((v for k, v in sections.items() if k.startswith("Speed")), "")
    return Card(title.strip(), notes.strip(), hardware.group(1) if hardware else "", block.group(1).splitlines() if block else [], rows, scores, speed)


def runs_section(runs: Sequence[tuple[str, Path]], earlier_rows: Sequence[str] = ()) -> list[str]:
    lines = [*_RUNS_HEADER, *earlier_rows]
    for label, checkpoint in runs:
        folder = Path(checkpoint).expanduser()
        # a training checkpoint, or an exported model folder whose index kept the step and time
        state_file = folder / "trainer_state.json" if (folder / "trainer_state.json").is_file() else folder / "model_index.json"
        state = json.loads(state_file.read_text())
        lines.append(f"| {label} | {state['step']} | {state['elapsed_seconds'] / 3600:.2f} h |")
    return lines


def eval_section(report: dict) -> list[str]:
    lines = ["## Judge scores (`kinema eval`)", "", "| category | pass | 95 % CI | passed | 2nd copy | most common failures |", "|---|---|---|---|---|---|"]
    for name, c in report["categories"].items():
        if not c["total"]:  # a category the eval was told to skip (--stories 0)
            continue
        lo, hi = c["ci95"]
        failures = "; ".join(f"{f['pattern']} ({f['count']})" for f in c.get("failures", [])[:3]) or "—"
        copies = c.get("passed_with_second_copy") if name in SINGLE_CATEGORIES else None  # older reports: not counted
        lines.append(f"| {name} | {100 * c['rate']:.1f} % | {100 * lo:.1f}–{100 * hi:.1f} % | {c['passed']}/{c['total']} | {'—' if copies is None else copies} | {failures} |")
    fvd = report.get("fvd_shapes")
    if fvd:
        lines += ["", f"FVD-shapes {fvd['value']:.1f} (real vs real: {fvd['floor']:.1f}); kinema's own Shapes-world classifier, not comparable to published FVD."]
    settings = report.get("settings", {})
    lines += ["", f"Settings: {json.dumps(settings)}"]
    return lines


def bench_section(report: dict) -> list[str]:
    rows = [
        ("device", f"{report['device']} ({report['threads']} threads)"),
        ("load", f"{report['load_seconds']:.2f} s"),
        ("CLI cold start → clip on disk", f"{report['cold_start_seconds']:.2f} s"),
        (f"warm 16-frame clip (median of {report['warm_clip_runs']})", f"{report['warm_clip_seconds']:.2f} s ({report['clip_fps']:.1f} frames/s)"),
        (f"{report['story_sentences']}-sentence story", f"{report['story_seconds']:.1f} s"),
        ("peak RSS, 10 vs long story", f"{report['short_story_peak_rss_mb']:.0f} MB vs {report['story_peak_rss_mb']:.0f} MB"),
        (f"{report.get('precision', 'bf16')} matmul peak", f"{report.get('peak_tflops', report.get('bf16_peak_tflops')):.2f} TFLOP/s"),  # older reports: bf16 only
    ]
    rows += [(f"train step: {s['name']}", f"{s['seconds']:.2f} s, {s['tflops']:.2f} TFLOP/s ({100 * s['of_peak']:.0f} % of peak)") for s in report.get("training_steps", [])]
    return ["## Speed (`kinema bench`)", "", "| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def write_card(
    folder: str | Path,
    card: Card,
    *,
    runs: Sequence[tuple[str, Path]] = (),
    eval_json: Path | None = None,
    bench_json: Path | None = None,
) -> Path:
    """Write `card` as the folder's README.md: the new `runs` join its run rows, and the reports given replace its judge and speed sections."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    lines = [f"# {card.title}", "", card.notes.strip(), "", "## Training", "", f"Hardware: {card.hardware}.", "", "```bash", *card.commands, "```", ""]
    if runs or card.run_rows:
        lines += [*runs_section(runs, card.run_rows), ""]
    for key in ("step", "elapsed_seconds", "stages", "trained_on"):
        if key in index:
            lines.append(f"- {key.replace('_', ' ')}: {json.dumps(index[key])}")
    lines += [f"- size on disk: {_size_mb(folder):.1f} MB", ""]
    if eval_json:
        lines += [*eval_section(json.loads(Path(eval_json).read_text())), ""]
    elif card.scores:
        lines += [card.scores, ""]
    if bench_json:
        lines += [*bench_section(json.loads(Path(bench_json).read_text())), ""]
    elif card.speed:
        lines += [card.speed, ""]
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text("\n".join(lines).replace("\n\n\n", "\n\n"))
    return folder / "README.md"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a model folder's README.md from its eval/bench reports.")
    parser.add_argument("folder")
    parser.add_argument("--update", action="store_true", help="keep the folder's card: append to its commands and runs, keep its title, notes and hardware unless given")
    parser.add_argument("--title")
    parser.add_argument("--command", action="append", default=[], help="a training command, exactly as run (repeatable)")
    parser.add_argument("--hardware")
    parser.add_argument("--run", action="append", default=[], help="LABEL=CHECKPOINT: a training checkpoint whose steps and wall time go in the card (repeatable)")
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--bench", type=Path)
    parser.add_argument("--notes", help="the text under the title (replaces the card's with --update)")
    parser.add_argument("--notes-file", type=Path, help="read --notes from this file")
    args = parser.parse_args(argv)
    notes = args.notes_file.read_text() if args.notes_file else args.notes
    try:
        card = read_card(args.folder) if args.update else Card(args.title or "")
    except (OSError, ValueError) as e:
        parser.error(str(e))
    card.title, card.hardware = args.title or card.title, args.hardware or card.hardware
    if not card.title or not card.hardware:
        parser.error("--title and --hardware are required (or --update a folder whose card has them)")
    if notes is not None:
        card.notes = notes
    card.commands += args.command
    runs = []
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--run takes LABEL=CHECKPOINT, got {item!r}")
        runs.append((label, Path(path)))
    print(write_card(args.folder, card, runs=runs, eval_json=args.eval, bench_json=args.bench))


if __name__ == "__main__":
    main()
