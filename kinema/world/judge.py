"""The pixel judge (WORLD.md, "How a clip is judged"): does a clip obey its sentences?

It sees only pixels. Each pixel is classified to the nearest world colour; each object
colour's largest connected component gives that object's centre, size and shape in
every frame; the sentences say what should be there and how it should move. A verdict
carries reasons, each with a short code a test or a report can group by.

The rules hold in every frame, as WORLD.md writes them: the background in each frame is
the named one, each named object shows in each frame of its event (a disappearing one
until it is gone), and no unnamed object colour shows in any frame. Where WORLD.md leaves
a number open (how far back an object must come for its vertical direction to have
reversed), a constant below says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .spec import (
    BACKGROUNDS,
    COLORS,
    EVENT_FRAMES,
    MOTION_VECTORS,
    AppearSentence,
    CameraSentence,
    DisappearSentence,
    MoveSentence,
    SceneChangeSentence,
    SceneSpec,
    Sentence,
)

# Which rules a score was judged by (eval reports carry it): 2 holds every rule in every
# frame and counts a bounce's reversals with BOUNCE_TURN; 1 tolerated a named object missing
# from, or an unnamed one in, 1 frame in 10, read the background by a majority over the
# clip, and counted any vertical step over 0.004 as a direction (a still object's pixel of
# jitter "bounced").
JUDGE_VERSION = 2

MAX_COLOR_DISTANCE = 60.0  # farther than this from every world colour: unclassified
MIN_AREA = 0.003  # an object colour is present when a component covers 0.3 % of the frame
FILL_CUTS = (0.64, 0.90)  # fill ratio below: triangle; between: circle; above: square
MOVE_MIN, MOVE_ACROSS_MAX, STILL_MAX = 0.2, 0.1, 0.05
SIZE_RATIO, ZOOM_RATIO = 1.3, 1.25
MIN_REVERSALS = 2
BOUNDARY_JUMP = 0.08
BOUNCE_TURN = 0.05  # a vertical direction has reversed once the object came back this far (3 px at 64)

_PALETTE_NAMES = [*BACKGROUNDS, *COLORS]
_PALETTE = np.asarray([*BACKGROUNDS.values(), *COLORS.values()], dtype=np.float32)
_N_BACKGROUNDS = len(BACKGROUNDS)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Reason:
    code: str  # background | missing | shape | motion | extra | jump | appeared | vanished
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class BoundaryVerdict:
    """Why the cut between event `index` and `index + 1` fails; no reasons = it passes."""

    index: int
    reasons: list[Reason] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class EventVerdict(BoundaryVerdict):
    """Why event `index` fails its sentence; no reasons = it obeys."""

    sentence: str = ""


@dataclass
class Verdict:
    events: list[EventVerdict]
    boundaries: list[BoundaryVerdict]

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.events) and all(b.passed for b in self.boundaries)

    @property
    def reasons(self) -> list[Reason]:
        return [r for e in self.events for r in e.reasons] + [r for b in self.boundaries for r in b.reasons]

    def codes(self) -> set[str]:
        return {r.code for r in self.reasons}

    def report(self) -> str:
        lines = []
        for e in self.events:
            mark = "ok  " if e.passed else "FAIL"
            lines.append(f"{mark} event {e.index + 1}: {e.sentence}")
            lines += [f"       - {r.message}" for r in e.reasons]
            if e.index < len(self.boundaries):
                b = self.boundaries[e.index]
                if not b.passed:
                    lines.append(f"FAIL boundary {b.index + 1}->{b.index + 2}")
                    lines += [f"       - {r.message}" for r in b.reasons]
        passed_events = sum(e.passed for e in self.events)
        passed_bounds = sum(b.passed for b in self.boundaries)
        summary = f"{'OBEYS' if self.passed else 'DOES NOT OBEY'}: {passed_events}/{len(self.events)} events"
        if self.boundaries:
            summary += f", {passed_bounds}/{len(self.boundaries)} boundaries"
        return "\n".join([*lines, summary])


# ---------------------------------------------------------------- what the pixels show


@dataclass(frozen=True)
class Sighting:
    """One object colour's largest component in one frame (frame-side units)."""

    x: float
    y: float
    size: float  # sqrt(area)
    fill: float  # area / bounding-box area


@dataclass
class FrameReading:
    background: str | None
    objects: dict[str, Sighting]


def classify(frames: np.ndarray) -> np.ndarray:
    """Index into the palette (backgrounds, then object colours) per pixel; -1 = none."""
    # Videos hold far fewer distinct colours than pixels: classify each colour once.
    packed = frames.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    colours, index = np.unique(packed, return_inverse=True)
    rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.float32)
    dist2 = ((rgb[:, None, :] - _PALETTE) ** 2).sum(-1)
    labels = dist2.argmin(axis=-1)
    labels[dist2.min(axis=-1) > MAX_COLOR_DISTANCE**2] = -1
    return labels[index].reshape(frames.shape[:-1])


def color_pixels(frames: np.ndarray, colors: Sequence[str]) -> np.ndarray:
    """Bool [K, ..., H, W]: per object colour in `colors`, the pixels of `frames`
    [..., H, W, 3] that `classify` reads as that colour (the frames classified once)."""
    labels = classify(frames)
    index = np.array([_PALETTE_NAMES.index(c) for c in colors], dtype=labels.dtype).reshape(-1, *[1] * labels.ndim)
    return labels[None] == index


def background_label(labels: np.ndarray) -> int:
    """A frame's background: the most common class in its outer ring (-1: unclassified)."""
    h, w = labels.shape
    ring = max(1, h // 32)
    border = np.concatenate([labels[:ring].ravel(), labels[-ring:].ravel(), labels[:, :ring].ravel(), labels[:, -ring:].ravel()])
    return Counter(border.tolist()).most_common(1)[0][0]


def read_frame(labels: np.ndarray) -> FrameReading:
    h, w = labels.shape
    top = background_label(labels)
    background = _PALETTE_NAMES[top] if top >= 0 else None
    objects: dict[str, Sighting] = {}
    min_pixels = MIN_AREA * h * w
    counts = np.bincount(labels.ravel() + 1, minlength=len(_PALETTE) + 1)[1:]
    for k in range(_N_BACKGROUNDS, len(_PALETTE)):
        if counts[k] < min_pixels:
            continue
        components, n = ndimage.label(labels == k, structure=_EIGHT_CONNECTED)
        areas = np.bincount(components.ravel())[1:]
        best = int(areas.argmax())
        if areas[best] < min_pixels:
            continue
        ys, xs = np.nonzero(components == best + 1)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        objects[_PALETTE_NAMES[k]] = Sighting(
            x=(xs.mean() + 0.5) / w, y=(ys.mean() + 0.5) / h, size=float(np.sqrt(areas[best])) / w, fill=float(areas[best] / box)
        )
    return FrameReading(background, objects)


def second_copy_frames(frames: np.ndarray, colors: Sequence[str]) -> int:
    """Frames in which one of `colors` shows a second blob of at least MIN_AREA beside its
    largest. Not part of the verdict: WORLD.md's judge reads each colour's largest blob (its
    world never holds two objects of one colour), so an object drawn twice can pass; the
    eval counts it beside the verdict."""
    index = [_PALETTE_NAMES.index(c) for c in colors]
    seen = 0
    for labels in classify(frames):
        for k in index:
            components, _ = ndimage.label(labels == k, structure=_EIGHT_CONNECTED)
            if (np.bincount(components.ravel())[1:] >= MIN_AREA * labels.size).sum() >= 2:
                seen += 1
                break
    return seen


def read_clip(frames: np.ndarray) -> list[FrameReading]:
    return [read_frame(labels) for labels in classify(frames)]


def shape_of(fill: float) -> str:
    return "triangle" if fill < FILL_CUTS[0] else "circle" if fill < FILL_CUTS[1] else "square"


def read_shape(track: list[Sighting]) -> tuple[str, float]:
    """The shape of a tracked object: median fill ratio over the frames where it is
    largest (within a factor sqrt 2), where its edges are least ambiguous."""
    biggest = max(s.size for s in track)
    fill = float(np.median([s.fill for s in track if s.size >= biggest / np.sqrt(2)]))
    return shape_of(fill), fill


# ---------------------------------------------------------------- what the sentences ask


@dataclass
class Expectation:
    """What one event should show: background, each object's shape and action."""

    sentence: str
    background: str
    objects: dict[str, tuple[str, str]]  # colour -> (shape, action); action "vanishes" too
    camera: str | None = None
    appeared: tuple[str, ...] = ()


def expectations(sentences: Sequence[Sentence]) -> list[Expectation]:
    """Play the sentences forward to know what every event should show."""
    from .language import caption  # the canonical words, for reports

    out: list[Expectation] = []
    background: str | None = None
    shapes: dict[str, str] = {}
    for i, s in enumerate(sentences):
        text = caption(s)
        if isinstance(s, SceneSpec):
            if i > 0:
                raise ValueError(f"sentence {i + 1} ({text!r}) sets a new scene; only the first sentence may")
            background = s.background
            shapes = {o.color: o.shape for o in s.objects}
            actions = {o.color: (o.shape, "still" if s.camera else o.motion) for o in s.objects}
            out.append(Expectation(text, background, actions, s.camera))
            continue
        if background is None:
            raise ValueError(f"the first sentence must set the scene, not {text!r}")
        still = {c: (shape, "still") for c, shape in shapes.items()}
        if isinstance(s, (MoveSentence, DisappearSentence)):
            if shapes.get(s.color) != s.shape:
                raise ValueError(f"sentence {i + 1} ({text!r}) names a {s.color} {s.shape} the story does not have")
            action = s.motion if isinstance(s, MoveSentence) else "vanishes"
            out.append(Expectation(text, background, {**still, s.color: (s.shape, action)}))
            if isinstance(s, DisappearSentence):
                del shapes[s.color]
        elif isinstance(s, CameraSentence):
            out.append(Expectation(text, background, still, s.camera))
        elif isinstance(s, AppearSentence):
            if s.color in shapes:
                raise ValueError(f"sentence {i + 1} ({text!r}): there is already a {s.color} object")
            shapes[s.color] = s.shape
            out.append(Expectation(text, background, {**still, s.color: (s.shape, "still")}, appeared=(s.color,)))
        elif isinstance(s, SceneChangeSentence):
            background = s.background
            out.append(Expectation(text, background, still))
        else:  # pragma: no cover
            raise TypeError(type(s))
    return out


# ---------------------------------------------------------------- judging


def _judge_event(index: int, readings: list[FrameReading], expect: Expectation) -> EventVerdict:
    verdict = EventVerdict(index, sentence=expect.sentence)
    reasons = verdict.reasons
    n = len(readings)

    wrong = Counter(r.background for r in readings if r.background != expect.background)
    if wrong:
        seen, k = wrong.most_common(1)[0]
        reasons.append(
            Reason("background", f"background should be {expect.background}, reads as {seen or 'no world colour'} ({k}/{n} frames)")
        )

    first, last = readings[0].objects, readings[-1].objects
    for color, (shape, action) in expect.objects.items():
        name = f"{color} {shape}"
        sightings = [r.objects[color] for r in readings if color in r.objects]
        if action == "vanishes":
            if color not in first:
                reasons.append(Reason("missing", f"the {name} should be there before it disappears"))
            elif color in last:
                reasons.append(Reason("motion", f"the {name} should have disappeared by the end"))
            continue
        if len(sightings) < n:
            reasons.append(Reason("missing", f"the {name} is missing ({len(sightings)}/{n} frames show it)"))
            continue
        seen_shape, fill = read_shape(sightings)
        if seen_shape != shape:
            reasons.append(Reason("shape", f"the {name} reads as a {seen_shape} (fill ratio {fill:.2f})"))
        a, b = first[color], last[color]
        problem = _motion_problem(action if not expect.camera else f"zoom {expect.camera}", a, b, sightings)
        if problem:
            reasons.append(Reason("motion", f"the {name} {problem}"))

    for color in COLORS:
        if color in expect.objects:
            continue
        frames_with = sum(color in r.objects for r in readings)
        if frames_with:
            reasons.append(Reason("extra", f"an unnamed {color} object shows in {frames_with}/{n} frames"))
    return verdict


# actions read from the size ratio last / first: (grows?, threshold, what it should do)
SIZE_RULES = {
    "grows": (True, SIZE_RATIO, "grow"),
    "shrinks": (False, SIZE_RATIO, "shrink"),
    "zoom in": (True, ZOOM_RATIO, "grow with the camera's zoom"),
    "zoom out": (False, ZOOM_RATIO, "shrink with the camera's zoom"),
}


def _motion_problem(action: str, a: Sighting, b: Sighting, track: list[Sighting]) -> str | None:
    dx, dy = b.x - a.x, b.y - a.y
    ratio = b.size / a.size
    moved = f"(moved dx={dx:+.2f}, dy={dy:+.2f})"
    if action in MOTION_VECTORS:
        ux, uy = MOTION_VECTORS[action]
        along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
        if along < MOVE_MIN or across >= MOVE_ACROSS_MAX:
            return f"should move {action} {moved}"
    elif action == "still":
        if abs(dx) >= STILL_MAX or abs(dy) >= STILL_MAX:
            return f"should stay still {moved}"
    elif action in SIZE_RULES:
        grow, threshold, wording = SIZE_RULES[action]
        if (ratio <= threshold) if grow else (ratio >= 1 / threshold):
            return f"should {wording} (size x{ratio:.2f})"
    elif action == "bounces":
        reversals = count_reversals([s.y for s in track], BOUNCE_TURN)
        if reversals < MIN_REVERSALS:
            return f"should bounce (vertical direction reverses {reversals}x)"
    else:  # pragma: no cover
        raise ValueError(action)
    return None


def count_reversals(values: Sequence[float], turn: float) -> int:
    """How often a track changes direction, a change counting once it has come back at
    least `turn` from its last extreme (so jitter smaller than `turn` is no direction)."""
    lo = hi = extreme = values[0]
    direction = 0
    reversals = 0
    for v in values[1:]:
        if direction == 0:
            lo, hi = min(lo, v), max(hi, v)
            if hi - lo >= turn:
                direction, extreme = (1 if v == hi else -1), v
        elif (v - extreme) * direction >= 0:
            extreme = v
        elif abs(v - extreme) >= turn:
            direction, extreme, reversals = -direction, v, reversals + 1
    return reversals


def _judge_boundary(index: int, before: FrameReading, after: FrameReading, expect_next: Expectation) -> BoundaryVerdict:
    verdict = BoundaryVerdict(index)
    for color in COLORS:
        a, b = before.objects.get(color), after.objects.get(color)
        if a and b:
            jump = float(np.hypot(b.x - a.x, b.y - a.y))
            if jump > BOUNDARY_JUMP:
                verdict.reasons.append(Reason("jump", f"the {color} object jumps {jump:.2f} between events {index + 1} and {index + 2}"))
        elif a and not b:
            verdict.reasons.append(Reason("vanished", f"the {color} object vanishes between events {index + 1} and {index + 2}"))
        elif b and not a and color not in expect_next.appeared:
            verdict.reasons.append(Reason("appeared", f"a {color} object pops up between events {index + 1} and {index + 2}"))
    return verdict


def judge(frames: np.ndarray, sentences: Sentence | str | Sequence[Sentence | str], frames_per_event: int = EVENT_FRAMES) -> Verdict:
    """Judge uint8 frames (T, H, W, 3) against a caption or a story's sentences.

    Sentences may be meanings (spec dataclasses) or text, which is parsed first."""
    from .language import parse

    if isinstance(sentences, (str, SceneSpec)) or not isinstance(sentences, Sequence):
        sentences = [sentences]
    meanings = [parse(s) if isinstance(s, str) else s for s in sentences]
    if not meanings:
        raise ValueError("nothing to judge: no sentences")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] != frames_per_event * len(meanings):
        raise ValueError(
            f"the video has {frames.shape[0]} frames; {len(meanings)} sentence(s) of {frames_per_event} frames need "
            f"{frames_per_event * len(meanings)}"
        )
    expects = expectations(meanings)
    readings = read_clip(frames)
    events = [
        _judge_event(k, readings[k * frames_per_event : (k + 1) * frames_per_event], e) for k, e in enumerate(expects)
    ]
    boundaries = [
        _judge_boundary(k, readings[(k + 1) * frames_per_event - 1], readings[(k + 1) * frames_per_event], expects[k + 1])
        for k in range(len(expects) - 1)
    ]
    return Verdict(events, boundaries)
