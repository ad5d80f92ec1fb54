"""The scoreboard every model is held to: draw prompts from the Shapes world, generate,
judge from pixels, and report pass rates with confidence intervals.

    report = evaluate(kinema.load_pipeline("world"), prompts=50, stories=8, seed=0)
    console.print(report.table())
    report.write_json("eval.json")

Categories (each prompt's seed is derived from the eval seed, its category and index):

    one object            canonical captions of one moving object
    two objects           canonical captions of two objects, each with its motion
    camera                canonical captions of a camera zoom
    held-out paraphrases  paraphrases (split "heldout") of random scenes of all kinds;
                          the judge checks the meaning, not the words
    story events          each sentence of the stories (canonical captions)
    story boundaries      each cut between two story sentences: nothing jumps or pops
    whole stories         stories whose every event and boundary pass

Single-clip prompts come from `random_event` (scenes the world can lay out legibly), so a
faithful renderer can score 100 % and `evaluate(load_pipeline("world"))` does: the upper
bound, and the harness's own test. FVD-shapes compares the single clips with fresh world
clips (`fvd.py`); its "real vs real" value, two independent world samples of the same
sizes, is the floor that sampling noise alone reaches.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..world import Reason, caption, judge, paraphrase, random_event, random_story
from ..world.judge import JUDGE_VERSION, second_copy_frames
from ..world.spec import COLORS, SHAPES, Sentence

SINGLE_CATEGORIES = ("one object", "two objects", "camera", "held-out paraphrases")
STORY_CATEGORIES = ("story events", "story boundaries", "whole stories")
CATEGORIES = (*SINGLE_CATEGORIES, *STORY_CATEGORIES)
_SCENE_KIND = {"one object": "one object", "two objects": "two objects", "camera": "camera"}
_CATEGORY_ID = {name: i for i, name in enumerate((*SINGLE_CATEGORIES, "stories"))}

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
TOP_FAILURES = 3
COPY_FRAMES = 4  # a quarter of an event: a named colour seen twice that often is an object drawn twice

# Progress hook: (events done, events in all).
Progress = Callable[[int, int], None]


def wilson_interval(passed: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a pass rate: sane at 0 % and 100 % and for small counts,
    unlike the normal approximation (which gives [1, 1] for 50/50)."""
    if total <= 0:
        return (0.0, 1.0)
    p = passed / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


_SUBJECT = re.compile(
    rf"^(?:the|a|an) (?:unnamed )?(?:{'|'.join(COLORS)}) (?P<what>{'|'.join(SHAPES)}|object)\b\s*"
)


def failure_pattern(reason: Reason) -> str:
    """A judge reason without its particulars (which colour, how far), so that failures
    can be counted: "the red circle should move left (moved dx=+0.01, dy=+0.00)" →
    "motion: should move left"."""
    msg = re.sub(r"\s*\([^)]*\)", "", reason.message)
    msg = re.sub(r"\s*between events \d+ and \d+", "", msg)
    msg = re.sub(r"\s*in \d+/\d+ frames", "", msg)
    if reason.code == "background":
        msg = "reads as no world colour" if "no world colour" in msg else "reads as another background"
    m = _SUBJECT.match(msg)
    if m:
        rest = msg[m.end() :]
        what = m.group("what")
        msg = f"{what} {rest}" if reason.code == "shape" or what == "object" else rest
        if reason.message.startswith("an unnamed"):
            msg = f"unnamed {msg}"
    msg = re.sub(r"\s+", " ", re.sub(r"[-+]?\d+(?:\.\d+)?", "", msg)).strip()
    return f"{reason.code}: {msg}"


# ---------------------------------------------------------------- prompts


@dataclass
class Prompt:
    """One thing to generate: a caption (single clip) or a story's sentences."""

    category: str  # a single-clip category, or "stories"
    index: int
    sentences: list[str]
    meanings: list[Sentence]  # what the judge checks
    seed: int  # the generation seed


def derive_seed(seed: int, category: str, index: int) -> int:
    """The generation seed of prompt `index` of `category`: independent of every other."""
    return int(np.random.SeedSequence([seed, _CATEGORY_ID[category], index]).generate_state(1)[0] & 0x7FFFFFFF)


def draw_prompts(
    seed: int = 0,
    *,
    prompts: int = 50,
    stories: int = 8,
    story_length: int = 6,
    long_story: int | None = 60,
) -> list[Prompt]:
    """The eval's prompts: `prompts` per single-clip category, `stories` stories of
    `story_length` sentences, and one of `long_story` sentences unless it is None/0.
    Each category draws from its own stream, so changing one count leaves the others."""
    if prompts < 0 or stories < 0:
        raise ValueError("--prompts and --stories must be at least 0")
    if stories and story_length < 1:
        raise ValueError("--story-length must be at least 1")
    out: list[Prompt] = []
    for category in SINGLE_CATEGORIES:
        rng = np.random.default_rng([seed, _CATEGORY_ID[category]])
        for i in range(prompts):
            spec, _ = random_event(rng, _SCENE_KIND.get(category))
            text = paraphrase(spec, rng, split="heldout") if category == "held-out paraphrases" else caption(spec)
            out.append(Prompt(category, i, [text], [spec], derive_seed(seed, category, i)))
    rng = np.random.default_rng([seed, _CATEGORY_ID["stories"]])
    lengths = [story_length] * stories + ([long_story] if long_story else [])
    for i, length in enumerate(lengths):
        meanings, _ = random_story(rng, length)
        out.append(Prompt("stories", i, [caption(m) for m in meanings], list(meanings), derive_seed(seed, "stories", i)))
    return out


# ---------------------------------------------------------------- results


@dataclass
class PromptResult:
    category: str
    index: int
    prompt: str | list[str]  # the caption, or a story's sentences
    seed: int
    passed: bool
    reasons: list[dict[str, str]]  # {"code", "message", "pattern"}
    events: list[bool] = field(default_factory=list)  # stories: each event passed
    boundaries: list[bool] = field(default_factory=list)  # stories: each boundary passed
    event_reasons: list[list[dict[str, str]]] = field(default_factory=list)
    boundary_reasons: list[list[dict[str, str]]] = field(default_factory=list)
    flicker: float | None = None
    second_copy: bool = False  # single clips: a named colour shows a second blob in >= COPY_FRAMES frames (not judged)
    seconds: float = 0.0  # generation time
    strips: list[str] = field(default_factory=list)


@dataclass
class CategoryScore:
    name: str
    passed: int
    total: int
    failures: list[tuple[str, int]]  # most common failure patterns, with counts
    flicker: float | None  # mean over the category's clips (None: no background read)
    second_copies: int = 0  # passed clips that show a named object twice (`second_copy_frames`)

    @property
    def rate(self) -> float | None:
        return self.passed / self.total if self.total else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.passed, self.total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "total": self.total,
            "rate": self.rate,
            "ci95": list(self.ci95),
            "flicker": self.flicker,
            "passed_with_second_copy": self.second_copies,
            "failures": [{"pattern": p, "count": c} for p, c in self.failures],
        }


@dataclass
class FVDScore:
    value: float  # FVD-shapes, generated vs real
    floor: float  # real vs real, same sizes: what sampling noise alone gives
    generated_clips: int
    real_clips: int

    def to_dict(self) -> dict[str, Any]:
        from .fvd import METRIC_NAME, NOT_COMPARABLE

        return {"metric": METRIC_NAME, **asdict(self), "note": NOT_COMPARABLE}


@dataclass
class Report:
    model: str
    settings: dict[str, Any]
    results: list[PromptResult]
    categories: dict[str, CategoryScore]
    fvd: FVDScore | None
    timings: dict[str, float]
    # held-out paraphrases split by whether they use a word the text encoder misreads (lexicon.py)
    heldout_lexicon: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """Every judged category at 100 %."""
        return all(c.passed == c.total for c in self.categories.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "categories": {k: v.to_dict() for k, v in self.categories.items()},
            "fvd_shapes": self.fvd.to_dict() if self.fvd else None,
            "timings": self.timings,
            "heldout_lexicon": self.heldout_lexicon,
            "results": [asdict(r) for r in self.results],
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        from ..fsutil import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def table(self):
        """A rich Table: pass rate, 95 % interval, counts, flicker, commonest failures."""
        from rich.table import Table

        table = Table(title=f"kinema eval {self.model} (seed {self.settings['seed']})", title_justify="left")
        table.add_column("category")
        table.add_column("pass", justify="right")
        table.add_column("95 % CI", justify="right")
        table.add_column("passed", justify="right")
        table.add_column("flicker", justify="right")
        table.add_column("2nd copy", justify="right")
        table.add_column("most common failures")
        for c in self.categories.values():
            if not c.total:
                continue
            lo, hi = c.ci95
            style = "green" if c.passed == c.total else "red" if c.rate < 0.5 else "yellow"
            table.add_row(
                c.name,
                f"[{style}]{100 * c.rate:.1f} %[/]",
                f"{100 * lo:.1f}–{100 * hi:.1f} %",
                f"{c.passed}/{c.total}",
                "—" if c.flicker is None else f"{c.flicker:.2f}",
                str(c.second_copies) if c.name in SINGLE_CATEGORIES else "—",
                "; ".join(f"{p} ×{n}" for p, n in c.failures) or "—",
            )
        return table

    def notes(self) -> list[str]:
        """The lines printed under the table: FVD-shapes, what flicker means, timings."""
        from .fvd import NOT_COMPARABLE

        lines = []
        if self.fvd:
            f = self.fvd
            lines.append(f"FVD-shapes {f.value:.2f} (real vs real: {f.floor:.2f}; {f.generated_clips} generated vs {f.real_clips} world clips)")
            lines.append(NOT_COMPARABLE)
        if self.heldout_lexicon:
            (a, n), (b, m) = self.heldout_lexicon["with"], self.heldout_lexicon["without"]
            lines.append(f"held-out paraphrases: {a}/{n} pass with a word the text encoder misreads (see --lexicon), {b}/{m} without")
        t = self.timings
        lines.append("flicker: mean |Δ| (0-255) between consecutive frames over pixels that are background in both")
        lines.append(f"2nd copy: passed clips in which a named colour also shows a second blob in {COPY_FRAMES}+ frames (the judge reads each colour's largest)")
        lines.append(
            f"time {t['total_s']:.1f} s: generate {t['generate_s']:.1f} s, judge {t['judge_s']:.1f} s"
            + (f", FVD-shapes {t['fvd_s']:.1f} s" if "fvd_s" in t else "")
        )
        return lines


def _reasons(reasons: Sequence[Reason]) -> list[dict[str, str]]:
    return [{"code": r.code, "message": r.message, "pattern": failure_pattern(r)} for r in reasons]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _top(patterns: Counter) -> list[tuple[str, int]]:
    return patterns.most_common(TOP_FAILURES)


def aggregate(results: Sequence[PromptResult]) -> dict[str, CategoryScore]:
    """Pass counts, failure patterns and flicker per category."""
    out: dict[str, CategoryScore] = {}
    for name in SINGLE_CATEGORIES:
        rs = [r for r in results if r.category == name]
        patterns = Counter(x["pattern"] for r in rs for x in r.reasons)
        copies = sum(r.passed and r.second_copy for r in rs)
        out[name] = CategoryScore(name, sum(r.passed for r in rs), len(rs), _top(patterns), _mean([r.flicker for r in rs]), copies)
    stories = [r for r in results if r.category == "stories"]
    flick = _mean([r.flicker for r in stories])
    event_patterns = Counter(x["pattern"] for r in stories for ev in r.event_reasons for x in ev)
    bound_patterns = Counter(x["pattern"] for r in stories for b in r.boundary_reasons for x in b)
    out["story events"] = CategoryScore(
        "story events", sum(sum(r.events) for r in stories), sum(len(r.events) for r in stories), _top(event_patterns), flick
    )
    out["story boundaries"] = CategoryScore(
        "story boundaries", sum(sum(r.boundaries) for r in stories), sum(len(r.boundaries) for r in stories), _top(bound_patterns), None
    )
    # a story counts each way it failed once, however many of its events and boundaries show it
    story_patterns = Counter(p for r in stories for p in {x["pattern"] for part in (*r.event_reasons, *r.boundary_reasons) for x in part})
    out["whole stories"] = CategoryScore("whole stories", sum(r.passed for r in stories), len(stories), _top(story_patterns), None)
    return out


# ---------------------------------------------------------------- the run


def _slug(category: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")


def _write_strips(frames: np.ndarray, prompt: Prompt, result: PromptResult, folder: Path, fps: float, per_event: int) -> list[str]:
    """PNG strips of what failed: the clip, or each failing story event and boundary
    (the last 4 frames before it and the first 4 after)."""
    from ..io import Video, write_strip

    name = f"{_slug(prompt.category)}-{prompt.index:03d}"
    if prompt.category != "stories":
        return [str(write_strip(Video(frames, fps=fps), folder / f"{name}.png"))]
    paths = []
    n_events = len(frames) // per_event
    for k, ok in enumerate(result.events):
        if not ok and k < n_events:
            clip = frames[k * per_event : (k + 1) * per_event]
            paths.append(str(write_strip(Video(clip, fps=fps), folder / f"{name}-event-{k + 1:02d}.png")))
    for k, ok in enumerate(result.boundaries):
        cut = (k + 1) * per_event
        if not ok and cut < len(frames):
            clip = frames[max(0, cut - 4) : cut + 4]
            paths.append(str(write_strip(Video(clip, fps=fps), folder / f"{name}-boundary-{k + 1:02d}-{k + 2:02d}.png")))
    return paths


def _generate(pipe, prompt: Prompt, options: dict[str, Any]) -> tuple[np.ndarray | None, str | None]:
    """The pipeline's frames, or why it could not make them (a ValueError: the model
    cannot act out this prompt). Other exceptions are bugs and propagate."""
    try:
        if prompt.category == "stories":
            video = pipe.story(prompt.sentences, seed=prompt.seed, **options)
        else:
            video = pipe(prompt.sentences[0], seed=prompt.seed, **options)
    except ValueError as err:
        return None, f"generation failed: {err}"
    return np.asarray(video.frames), None


def evaluate(
    pipe,
    *,
    prompts: int = 50,
    stories: int = 8,
    story_length: int = 6,
    long_story: int | None = 60,
    seed: int = 0,
    fvd: bool = True,
    fvd_real: int | None = None,
    strip_dir: str | os.PathLike | None = None,
    strip_limit: int = 50,
    progress: Progress | None = None,
    classifier=None,
    options: dict[str, Any] | None = None,
) -> Report:
    """Score a pipeline (or a name `kinema.load_pipeline` accepts) on the Shapes world.

    prompts: per single-clip category; stories × story_length sentences, plus one story of
    `long_story` sentences (None or 0: none); fvd: compute FVD-shapes against `fvd_real`
    world clips (default: as many as generated, at least 100); strip_dir: PNG strips of
    failures (at most `strip_limit` per category); progress(done, total) counts events;
    options: sampling keywords for every generation (num_inference_steps, guidance_scale),
    e.g. to score a distilled model's teacher from the same folder."""
    from ..pipelines import Pipeline, load_pipeline

    if not isinstance(pipe, Pipeline):
        pipe = load_pipeline(pipe)
    started = time.perf_counter()
    todo = draw_prompts(seed, prompts=prompts, stories=stories, story_length=story_length, long_story=long_story)
    draw_s = time.perf_counter() - started
    strip_folder = Path(strip_dir) if strip_dir is not None else None
    if strip_folder is not None:
        strip_folder.mkdir(parents=True, exist_ok=True)
    strips_written: Counter = Counter()
    per_event = pipe.frames_per_event
    total_events = sum(len(p.sentences) for p in todo)
    done_events = 0
    generate_s = judge_s = 0.0
    results: list[PromptResult] = []
    generated: list[np.ndarray] = []
    from .fvd import flicker

    for prompt in todo:
        t0 = time.perf_counter()
        frames, error = _generate(pipe, prompt, options or {})
        t1 = time.perf_counter()
        is_story = prompt.category == "stories"
        result = PromptResult(prompt.category, prompt.index, list(prompt.sentences) if is_story else prompt.sentences[0], prompt.seed, False, [], seconds=round(t1 - t0, 4))
        if error is None:
            try:
                verdict = judge(frames, prompt.meanings, frames_per_event=per_event)
            except ValueError as err:  # wrong frame count or shape
                error = f"unjudgeable output: {err}"
        if error is not None:
            failed = [{"code": "error", "message": error, "pattern": failure_pattern(Reason("error", error))}]
            result.reasons = failed
            if is_story:
                n = len(prompt.sentences)
                result.events, result.boundaries = [False] * n, [False] * (n - 1)
                result.event_reasons, result.boundary_reasons = [failed] * n, [failed] * (n - 1)
        else:
            result.passed = verdict.passed
            result.reasons = _reasons(verdict.reasons)
            result.flicker = flicker(frames)
            if is_story:
                result.events = [e.passed for e in verdict.events]
                result.boundaries = [b.passed for b in verdict.boundaries]
                result.event_reasons = [_reasons(e.reasons) for e in verdict.events]
                result.boundary_reasons = [_reasons(b.reasons) for b in verdict.boundaries]
            else:
                (scene,) = prompt.meanings  # a single clip means one scene
                result.second_copy = second_copy_frames(frames, [o.color for o in scene.objects]) >= COPY_FRAMES
                if fvd and frames.shape[0] == per_event:
                    generated.append(frames)
            if strip_folder is not None and not result.passed and strips_written[prompt.category] < strip_limit:
                strips_written[prompt.category] += 1
                result.strips = _write_strips(frames, prompt, result, strip_folder, pipe.fps, per_event)
        judge_s += time.perf_counter() - t1
        generate_s += t1 - t0
        results.append(result)
        done_events += len(prompt.sentences)
        if progress:
            progress(done_events, total_events)

    fvd_score, timings = None, {}
    if fvd and len(generated) >= 2:
        from .fvd import clip_features, default_classifier, frechet_distance, real_clips

        t0 = time.perf_counter()
        model = classifier or default_classifier()
        n_real = fvd_real or max(100, len(generated))
        gen_f = clip_features(np.stack(generated), model)
        real_f = clip_features(real_clips(n_real, seed, stream=0), model)
        # two independent world samples of the same sizes: the value noise alone gives
        floor_f = clip_features(real_clips(len(generated), seed, stream=1), model)
        fvd_score = FVDScore(frechet_distance(gen_f, real_f), frechet_distance(floor_f, real_f), len(generated), n_real)
        timings["fvd_s"] = round(time.perf_counter() - t0, 2)

    total = time.perf_counter() - started
    timings = {
        "total_s": round(total, 2),
        "draw_prompts_s": round(draw_s, 2),
        "generate_s": round(generate_s, 2),
        "judge_s": round(judge_s, 2),
        **timings,
        "seconds_per_event": round(generate_s / max(1, total_events), 4),
    }
    from .. import __version__

    settings = {
        "seed": seed,
        "prompts": prompts,
        "stories": stories,
        "story_length": story_length,
        "long_story": long_story or 0,
        "fvd": fvd,
        "fvd_real": fvd_score.real_clips if fvd_score else None,
        "kinema_version": __version__,
        "judge_version": JUDGE_VERSION,
        **({"sampling": dict(options)} if options else {}),
    }
    heldout = [(r.prompt, r.passed) for r in results if r.category == "held-out paraphrases"]
    lexicon = None
    if heldout and getattr(pipe, "text_encoder", None) is not None:
        from .lexicon import heldout_by_misread, probe_lexicon

        lexicon = heldout_by_misread(heldout, probe_lexicon(pipe.text_encoder).misread_words("heldout"))
    return Report(getattr(pipe, "name", type(pipe).__name__), settings, results, aggregate(results), fvd_score, timings, lexicon)
