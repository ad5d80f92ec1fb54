"""Where things are: a sentence's meaning placed in the frame, event by event.

A `State` is the world between events (background, placed objects, camera zoom). An
`Event` is a state plus what each object does for the next 16 frames; `Event.at(t)`
gives every object's place at time t in [0, 1], which the renderer draws. Stories are
chains of events: `event.end()` is the next event's starting state, so nothing jumps.
All positions are in frame coordinates, so a zoom is a real change of scale that later
events inherit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .spec import (
    BOUNCE_HEIGHT,
    EVENT_FRAMES,
    GROWTH,
    MOTION_VECTORS,
    SIZES,
    TRAVEL,
    ZOOM,
    AppearSentence,
    CameraSentence,
    DisappearSentence,
    MoveSentence,
    ObjectSpec,
    SceneChangeSentence,
    SceneSpec,
    Sentence,
)

MIN_SIDE = 0.09  # a small object shrunk (0.16 / 1.75) is 0.091; a triangle much smaller falls under the judge's 0.3 % of the frame
MARGIN = 0.02  # keep objects this far from the frame's edge
GAP = 0.04  # and this far apart, so no anti-aliased edge ever touches another object


class InfeasibleError(ValueError):
    """The world cannot do what the sentence asks from this state (no room, too small...)."""


@dataclass(frozen=True)
class Thing:
    """A placed object: frame coordinates of its bounding-box centre and its side."""

    color: str
    shape: str
    side: float
    x: float
    y: float


@dataclass(frozen=True)
class State:
    background: str
    things: tuple[Thing, ...] = ()
    zoom: float = 1.0  # the camera's scale so far; stars and newly appearing objects follow it
    star_seed: int = 0

    def find(self, color: str) -> Thing | None:
        return next((t for t in self.things if t.color == color), None)


@dataclass(frozen=True)
class Event:
    """One event: a starting state, one action per thing, and an optional camera move.

    actions[i] is a motion from spec.MOTIONS or "vanishes" (shrinks to nothing)."""

    start: State
    actions: tuple[str, ...]
    camera: str | None = None
    appeared: tuple[str, ...] = ()  # colours that popped in at this event's start

    def scale(self, t: float) -> float:
        """The camera's scale at time t relative to the event's start (x1 -> x1.6)."""
        if self.camera == "in":
            return 1.0 + (ZOOM - 1.0) * t
        if self.camera == "out":
            return 1.0 + (1.0 / ZOOM - 1.0) * t
        return 1.0

    def at(self, t: float) -> list[Thing]:
        """Every object at time t in [0, 1], in the order of `start.things` (a vanished
        one has side 0)."""
        k = self.scale(t)
        out = []
        for thing, action in zip(self.start.things, self.actions):
            x, y, side = thing.x, thing.y, thing.side
            if action in MOTION_VECTORS:
                dx, dy = MOTION_VECTORS[action]
                x, y = x + TRAVEL * t * dx, y + TRAVEL * t * dy
            elif action == "bounces":
                y = y - BOUNCE_HEIGHT * abs(math.sin(2 * math.pi * t))
            elif action == "grows":
                side = side * (1 + (GROWTH - 1) * t)
            elif action == "shrinks":
                side = side * (1 + (1 / GROWTH - 1) * t)
            elif action == "vanishes":
                side = side * (1 - t)
            if k != 1.0:
                x, y, side = 0.5 + (x - 0.5) * k, 0.5 + (y - 0.5) * k, side * k
            out.append(Thing(thing.color, thing.shape, side, x, y))
        return out

    def end(self) -> State:
        """The state the next event starts from."""
        things = tuple(t for t in self.at(1.0) if t.side > 0)
        return replace(self.start, things=things, zoom=self.start.zoom * self.scale(1.0))

    def check(self, frames: int = EVENT_FRAMES) -> None:
        """Raise InfeasibleError unless every object stays inside, visible and apart."""
        for i in range(frames):
            things = self.at(i / (frames - 1))
            for thing, action in zip(things, self.actions):
                half = thing.side / 2
                if min(thing.x - half, thing.y - half) < MARGIN or max(thing.x + half, thing.y + half) > 1 - MARGIN:
                    raise InfeasibleError(f"the {thing.color} {thing.shape} would leave the frame")
                if action != "vanishes" and thing.side < MIN_SIDE:
                    raise InfeasibleError(f"the {thing.color} {thing.shape} would become too small to see")
            for a in range(len(things)):
                for b in range(a + 1, len(things)):
                    p, q = things[a], things[b]
                    reach = (p.side + q.side) / 2 + GAP
                    if abs(p.x - q.x) < reach and abs(p.y - q.y) < reach:
                        raise InfeasibleError(f"the {p.color} {p.shape} would touch the {q.color} {q.shape}")


def _random_thing(obj: ObjectSpec | AppearSentence, side: float, rng: np.random.Generator) -> Thing:
    lo, hi = MARGIN + side / 2, 1 - MARGIN - side / 2
    x, y = rng.uniform(lo, hi, size=2)
    return Thing(obj.color, obj.shape, side, float(x), float(y))


def place(spec: SceneSpec, rng: np.random.Generator, tries: int = 2000) -> Event:
    """Lay out a caption's scene at random places where every motion fits."""
    star_seed = int(rng.integers(2**31))
    actions = tuple("still" if spec.camera else o.motion for o in spec.objects)
    for _ in range(tries):
        things = tuple(_random_thing(o, o.side, rng) for o in spec.objects)
        event = Event(State(spec.background, things, 1.0, star_seed), actions, spec.camera)
        try:
            event.check()
            return event
        except InfeasibleError:
            continue
    raise InfeasibleError(f"no layout found for {spec}")


def advance(state: State, sentence: Sentence, rng: np.random.Generator, tries: int = 2000) -> Event:
    """The event a story sentence makes from `state`; raises InfeasibleError if it cannot."""
    if isinstance(sentence, SceneSpec):
        return place(sentence, rng, tries)
    still = tuple("still" for _ in state.things)
    if isinstance(sentence, MoveSentence):
        thing = _named(state, sentence.color, sentence.shape)
        actions = tuple(sentence.motion if t is thing else "still" for t in state.things)
        event = Event(state, actions)
    elif isinstance(sentence, CameraSentence):
        event = Event(state, still, sentence.camera)
    elif isinstance(sentence, DisappearSentence):
        thing = _named(state, sentence.color, sentence.shape)
        event = Event(state, tuple("vanishes" if t is thing else "still" for t in state.things))
    elif isinstance(sentence, SceneChangeSentence):
        if sentence.background == state.background:
            raise InfeasibleError(f"the scene is already {sentence.background}")
        event = Event(replace(state, background=sentence.background), still)
    elif isinstance(sentence, AppearSentence):
        if state.find(sentence.color):
            raise InfeasibleError(f"there is already a {sentence.color} object")
        if len(state.things) >= 2:
            raise InfeasibleError("the world holds at most two objects")
        side = SIZES[sentence.size or "medium"] * state.zoom
        for _ in range(tries):
            new = _random_thing(sentence, side, rng)
            event = Event(replace(state, things=state.things + (new,)), still + ("still",), None, (new.color,))
            try:
                event.check()
                return event
            except InfeasibleError:
                continue
        raise InfeasibleError(f"no free place for a {sentence.color} {sentence.shape}")
    else:  # pragma: no cover - the union above is exhaustive
        raise TypeError(type(sentence))
    event.check()
    return event


def _named(state: State, color: str, shape: str) -> Thing:
    thing = state.find(color)
    if thing is None or thing.shape != shape:
        raise InfeasibleError(f"there is no {color} {shape} in the scene")
    return thing

