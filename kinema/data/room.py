"""Room for the rest of the story: objects placed where the next sentences can be acted out.

The world places a story's objects where every later sentence fits (`plan_story`: a move
needs a free path, a zoom room, a newcomer a free place). A model places the first scene's
objects, and each newcomer, where it likes to draw them: a triangle drawn at the right edge
cannot then "move to the right" and leaves the frame, and the film has lost it for good.
Drawing such an event again seldom helps (a caption's objects land in much the same place
draw after draw), so the event's placed objects are moved instead, as a newcomer is laid on
the film clear of its objects (`continuity.lay_on`): the film's state is read off the
event's last frame (each object's bounding box, the shape the story gave it, the camera's
zoom), and the placed objects' whole paths are shifted by the least shifts (each of two
objects its own) that keep them inside the frame and clear of the rest and from which the
world can act out the next HORIZON sentences. A shift changes no motion, shape or size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from ..world.judge import classify, read_frame, shape_of
from ..world.sample import plan_story
from ..world.scene import GAP, MARGIN, Event, InfeasibleError, State, Thing
from ..world.spec import ZOOM, AppearSentence, CameraSentence, SceneSpec, Sentence
from .continuity import EIGHT, largest_of, lay_shifted, meaning_of, objects_of, painted_out

HORIZON = 5  # sentences ahead that a placement must leave room for (the film drifts from any plan beyond)
STEP = 2  # pixels between the shifts tried for one object ...
PAIR_STEP = 4  # ... and for each of two
MAX_TRIES = 1500  # moves tried at most, least first (at 64x64, one object out to about 2/3 of the frame, two to about 3/8)
PLAN_BUDGET = 200  # placements the world tries per move when a newcomer ahead needs a place
HALO = 2  # pixels round an object moved with it and painted out where it was: its soft edge, as a model draws it


def film_state(frame: np.ndarray, told: Sequence[Sentence]) -> State | None:
    """The world's state that `frame` [H, W, 3] uint8 shows after the sentences `told` (read
    by the world): each object colour the judge sees, with the shape the story gave it, its
    bounding box's centre and longer side (clamped into the frame), and the camera's zoom so far.
    None when the judge finds no background."""
    reading = read_frame(classify(frame[None])[0])
    if reading.background is None:
        return None
    shapes: dict[str, str] = {}
    zoom = 1.0
    for sentence in told:
        if isinstance(sentence, SceneSpec):
            shapes.update((o.color, o.shape) for o in sentence.objects)
        elif isinstance(sentence, AppearSentence):
            shapes[sentence.color] = sentence.shape
        camera = sentence.camera if isinstance(sentence, (SceneSpec, CameraSentence)) else None
        zoom *= {"in": ZOOM, "out": 1 / ZOOM, None: 1.0}[camera]
    things = []
    height, width = frame.shape[:2]
    for color, seen in reading.objects.items():
        ys, xs = np.nonzero(largest_of(frame, color))
        if len(ys):  # its bounding box, the longer side: a blob drawn wider than a square needs that room
            side, x, y = max(np.ptp(ys) + 1, np.ptp(xs) + 1) / width, (xs.min() + xs.max() + 1) / 2 / width, (ys.min() + ys.max() + 1) / 2 / height
        else:
            side, x, y = seen.size / np.sqrt(seen.fill), seen.x, seen.y
        side = min(side, 1 - 2 * MARGIN)
        lo, hi = MARGIN + side / 2, 1 - MARGIN - side / 2
        things.append(Thing(color, shapes.get(color, shape_of(seen.fill)), side, float(np.clip(x, lo, hi)), float(np.clip(y, lo, hi))))
    return State(reading.background, tuple(things), zoom)


def acts_out(state: State, ahead: Sequence[Sentence]) -> bool:
    """Whether the world holds `state` (every object inside the frame and clear of the
    others) and can act out the sentences `ahead` from it."""
    try:
        Event(state, tuple("still" for _ in state.things)).check()
        plan_story(ahead, start=state, budget=PLAN_BUDGET, check_legible=False)
    except InfeasibleError:
        return False
    return True


def shifts(height: int, width: int, step: int = STEP) -> list[tuple[int, int]]:
    """Shifts (dy, dx) in pixels, `step` apart, nearest first."""
    dy, dx = np.meshgrid(*(np.arange(-(n // step) * step, n, step) for n in (height, width)), indexing="ij")
    order = np.argsort((dy**2 + dx**2).ravel(), kind="stable")
    return list(zip(dy.ravel()[order].tolist(), dx.ravel()[order].tolist()))


def moves(objects: int, height: int, width: int) -> list[tuple[tuple[int, int], ...]]:
    """A shift per object, least squared displacement in all first, the MAX_TRIES least
    (not moving at all left out). Two objects may move apart, not only together: a zoom
    ahead needs them apart, a move a free path past the other."""
    if objects == 1:
        return [(shift,) for shift in shifts(height, width)[1 : MAX_TRIES + 1]]
    near = shifts(height, width, PAIR_STEP)[: int(np.sqrt(MAX_TRIES)) * 3]
    cost = np.array([dy * dy + dx * dx for dy, dx in near])
    order = np.argsort(cost[:, None] + cost[None, :], axis=None, kind="stable")[1 : MAX_TRIES + 1]
    return [(near[i // len(near)], near[i % len(near)]) for i in order.tolist()]


def room_for(event: np.ndarray, sentences: Sequence[str], k: int, placed: Iterable[str] | None = None) -> np.ndarray:
    """`event` [T, H, W, 3] uint8, the film's event for sentence `k` of `sentences`, with the
    objects it placed (colours `placed`; None: those its sentence names, a first scene's)
    moved along their whole paths by the least shifts (`moves`) that keep them inside the
    frame, the world's gap from each other and from the film's other objects in every frame,
    and from which the world can act out the next HORIZON sentences (`acts_out`), their old
    places painted with the background. Unchanged when they already can, when no move helps,
    or when there is nothing to ask: no sentence ahead, or one the world cannot read."""
    told = [meaning_of(s) for s in sentences[: k + 1]]
    ahead = []
    for sentence in sentences[k + 1 : k + 1 + HORIZON]:
        meaning = meaning_of(sentence)
        if meaning is None or isinstance(meaning, SceneSpec):
            break
        ahead.append(meaning)
    state = film_state(event[-1], told) if ahead and all(m is not None for m in told) else None
    if state is None or acts_out(state, ahead):
        return event
    placed = set(placed) if placed is not None else {o.color for o in told[k].objects} if isinstance(told[k], SceneSpec) else set()
    colors = [t.color for t in state.things if t.color in placed]
    paths = {c: p for c in colors if (p := np.stack([largest_of(frame, c) for frame in event])).any()}
    if not paths:
        return event
    height, width = event.shape[1:3]
    gap = math.ceil(GAP * width)
    halos = [ndimage.binary_dilation(p, structure=EIGHT[None], iterations=HALO) for p in paths.values()]
    stays = np.stack([objects_of(frame)[0] > 0 for frame in event]) & ~np.any(halos, axis=0)  # the film's objects that stay
    near_stays = _grown(stays, gap)
    near_first = _grown(halos[0], gap) if len(halos) == 2 else None  # for two objects that move apart
    boxes = [(ys.min(), ys.max(), xs.min(), xs.max()) for ys, xs in (np.nonzero(p.any(0)) for p in paths.values())]
    for move in moves(len(paths), height, width):
        if any(y0 + dy < 0 or y1 + dy >= height or x0 + dx < 0 or x1 + dx >= width for (y0, y1, x0, x1), (dy, dx) in zip(boxes, move)):
            continue
        if any(_meets(near_stays, halo, shift) for halo, shift in zip(halos, move)):
            continue
        if len(move) == 2 and move[0] != move[1] and _meets(near_first, halos[1], np.subtract(move[1], move[0])):
            continue
        by = dict(zip(paths, move))
        things = tuple(replace(t, x=t.x + by[t.color][1] / width, y=t.y + by[t.color][0] / height) if t.color in by else t for t in state.things)
        if acts_out(replace(state, things=things), ahead):
            return _shifted(event, halos, move)
    return event


def _grown(pixels: np.ndarray, gap: int) -> np.ndarray:
    """[T, H, W] bool grown by `gap` pixels in each frame."""
    return ndimage.binary_dilation(pixels, structure=EIGHT[None], iterations=gap) if pixels.any() else pixels


def _meets(near: np.ndarray, path: np.ndarray, shift: Sequence[int]) -> bool:
    """Whether `path` [T, H, W] bool, moved by `shift` (dy, dx) pixels, touches `near` in any frame."""
    return bool((near & ndimage.shift(path, (0, *shift), order=0, cval=False)).any())


def _shifted(event: np.ndarray, halos: list[np.ndarray], move: Sequence[tuple[int, int]]) -> np.ndarray:
    """`event` with the objects `halos` ([T, H, W] bool each, soft edges and all) painted out
    and laid back, each its shift (dy, dx) of `move` away (the objects stay inside the frame)."""
    out = event.copy()
    for t, frame in enumerate(event):
        objects = [h[t] for h in halos]
        out[t] = painted_out(frame, np.any(objects, axis=0))
        for o, shift in zip(objects, move):
            lay_shifted(out[t], frame, o, shift)  # a halo past the edge is dropped
    return out
