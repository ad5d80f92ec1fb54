"""Random scenes and stories: the world as an endless, seeded source of clips.

Every draw is feasible by construction: a sentence is kept only if the world can act it
out from the current state (`scene.advance` raises otherwise), so a story of any length
never asks an object to leave the frame, vanish into a dot, or walk through another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .judge import read_clip, read_shape
from .render import render_event
from .scene import Event, InfeasibleError, State, advance, place
from .spec import (
    BACKGROUNDS,
    COLORS,
    DEFAULT_SIZE,
    MOTIONS,
    SHAPES,
    SIZES,
    AppearSentence,
    CameraSentence,
    DisappearSentence,
    MoveSentence,
    ObjectSpec,
    SceneChangeSentence,
    SceneSpec,
    Sentence,
)

SCENE_KINDS = ("one object", "two objects", "camera")


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def random_object(rng: np.random.Generator, exclude_colors: tuple[str, ...] = (), motion: bool = True) -> ObjectSpec:
    color = _pick(rng, [c for c in COLORS if c not in exclude_colors])
    size = _pick(rng, [None, *SIZES]) if rng.random() < 0.5 else None
    return ObjectSpec(color, _pick(rng, SHAPES), _pick(rng, MOTIONS) if motion else "still", size)


def random_scene(rng: np.random.Generator, kind: str | None = None) -> SceneSpec:
    """A random caption meaning of the given kind ("one object", "two objects", "camera")."""
    kind = kind or _pick(rng, SCENE_KINDS)
    background = _pick(rng, BACKGROUNDS)
    if kind == "one object":
        return SceneSpec(background, (random_object(rng),))
    if kind == "two objects":
        first = random_object(rng)
        # the canonical two-object grammar names no sizes
        first = ObjectSpec(first.color, first.shape, first.motion)
        second = random_object(rng, (first.color,))
        return SceneSpec(background, (first, ObjectSpec(second.color, second.shape, second.motion)))
    if kind == "camera":
        obj = random_object(rng, motion=False)
        return SceneSpec(background, (ObjectSpec(obj.color, obj.shape),), _pick(rng, ("in", "out")))
    raise ValueError(f"unknown scene kind {kind!r}; choose from {', '.join(SCENE_KINDS)}")


LEGIBLE_SIDE = 0.2  # objects at least this large always read as their shape at 64 px


def legible(event: Event, size: int = DEFAULT_SIZE) -> bool:
    """Whether the judge reads every object of this event as present and of its shape.

    At 64 px a small triangle has so few pixels that, in a few sub-pixel positions, its
    fill ratio reads as a circle's; the world does not place objects there."""
    if all(t.side >= LEGIBLE_SIDE for k in (0.0, 1.0) for t in event.at(k)):
        return True
    readings = read_clip(render_event(event, size))
    for thing, action in zip(event.start.things, event.actions):
        track = [r.objects[thing.color] for r in readings if thing.color in r.objects]
        if action == "vanishes":
            if thing.color not in readings[0].objects:
                return False
        elif len(track) < len(readings):
            return False
        if read_shape(track)[0] != thing.shape:
            return False
    return True


def random_event(rng: np.random.Generator, kind: str | None = None, check_legible: bool = True) -> tuple[SceneSpec, Event]:
    """A scene whose layout exists and reads right (a few specs, e.g. a large object
    bouncing beside another, rarely have a layout: those are drawn again)."""
    while True:
        spec = random_scene(rng, kind)
        try:
            event = place(spec, rng, tries=300)
        except InfeasibleError:
            continue
        if not check_legible or legible(event):
            return spec, event


# How often each kind of story sentence is tried after the first.
STORY_WEIGHTS = {"motion": 0.45, "camera": 0.12, "appear": 0.15, "disappear": 0.1, "scene": 0.18}


def _candidate(state: State, kind: str, rng: np.random.Generator) -> Sentence | None:
    if kind == "motion" and state.things:
        thing = state.things[int(rng.integers(len(state.things)))]
        return MoveSentence(thing.color, thing.shape, _pick(rng, MOTIONS))
    if kind == "camera" and state.things:
        return CameraSentence(_pick(rng, ("in", "out")))
    if kind == "appear" and len(state.things) < 2:
        taken = {t.color for t in state.things}
        obj = random_object(rng, tuple(taken), motion=False)
        return AppearSentence(obj.color, obj.shape, obj.size)
    if kind == "disappear" and state.things:
        thing = state.things[int(rng.integers(len(state.things)))]
        return DisappearSentence(thing.color, thing.shape)
    if kind == "scene":
        return SceneChangeSentence(_pick(rng, [b for b in BACKGROUNDS if b != state.background]))
    return None


def next_sentence(state: State, rng: np.random.Generator, check_legible: bool = True) -> tuple[Sentence, Event]:
    """A random sentence the world can act out (legibly) from `state`, and its event."""
    kinds, weights = zip(*STORY_WEIGHTS.items())
    p = np.asarray(weights) / sum(weights)
    while True:
        sentence = _candidate(state, str(rng.choice(kinds, p=p)), rng)
        if sentence is None:
            continue
        try:
            event = advance(state, sentence, rng, tries=200)
        except InfeasibleError:
            continue
        if not check_legible or legible(event):
            return sentence, event


def random_story(rng: np.random.Generator, length: int, check_legible: bool = True) -> tuple[list[Sentence], list[Event]]:
    """A feasible story of `length` sentences: a scene, then changes to it."""
    if length < 1:
        raise ValueError("a story needs at least one sentence")
    first, event = random_event(rng, _pick(rng, ("one object", "two objects")), check_legible)
    sentences, events = [first], [event]
    while len(sentences) < length:
        sentence, event = next_sentence(events[-1].end(), rng, check_legible)
        sentences.append(sentence)
        events.append(event)
    return sentences, events


def plan_story(
    sentences: Sequence[Sentence], seed: int = 0, retries: int = 40, budget: int = 20000, start: State | None = None, check_legible: bool = True
) -> list[Event]:
    """Act out given sentences as events, choosing where new objects go so that every
    later sentence fits too (a zoom needs room, a move needs a free path).

    Only the first scene and each "appears" place something at random. The search is
    depth first: a placement is drawn again (up to `retries` times) when some later
    sentence cannot be acted out from it, within `budget` placements in all. With a
    `start` state the sentences continue a story from it, so none of them sets a scene."""
    if not sentences:
        raise InfeasibleError("the story is empty")
    for i, sentence in enumerate(sentences):
        opens = i == 0 and start is None  # the sentence that sets the scene
        if opens != isinstance(sentence, SceneSpec):
            raise InfeasibleError(
                "a story must start with a sentence that sets the scene, e.g. 'a red circle moves up at night'"
                if opens
                else f"sentence {i + 1} sets a whole new scene; later sentences change one thing"
            )
    rng = np.random.default_rng(seed)
    spent = 0

    def search(k: int, state: State | None) -> list[Event] | None:
        nonlocal spent
        if k == len(sentences):
            return []
        sentence = sentences[k]
        drawn = state is None or isinstance(sentence, AppearSentence)
        for _ in range(retries if drawn else 1):
            spent += 1
            if spent > budget:
                return None
            try:
                event = place(sentence, rng, tries=50) if state is None else advance(state, sentence, rng, tries=50)
            except InfeasibleError:
                continue
            rest = search(k + 1, event.end())
            if rest is not None and (not check_legible or legible(event)):  # rendered only on a path that works
                return [event, *rest]
        return None

    events = search(0, start)
    if events is None:
        raise InfeasibleError("the world found no way to act out this story (too many objects, zooms or moves for the frame)")
    return events


def render_story(sentences: Sequence[Sentence | str] | Sentence | str, seed: int = 0, size: int = DEFAULT_SIZE) -> Iterator[np.ndarray]:
    """Frames of a story (or one caption) event by event: uint8 (16, size, size, 3) each."""
    from .language import parse

    if isinstance(sentences, (str, SceneSpec)):
        sentences = [sentences]
    meanings = [parse(s) if isinstance(s, str) else s for s in sentences]
    for event in plan_story(meanings, seed):
        yield render_event(event, size)
