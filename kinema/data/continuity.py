"""What a story sentence leaves as it was: a film's continuity, event to event.

In a story only what a sentence changes changes (WORLD.md): "the red circle moves up"
leaves every other object where it is, "a yellow triangle appears" and "the blue square
disappears" leave the rest, and "the scene changes to the desert" keeps the objects on a
new background. A model that continues from the film's last frame redraws all of it each
event, and a square it redraws a little rounder stays rounder in every event after (on
phenaki-shapes, story events that followed a failed one passed 27 % of the time against
72 %). So a pipeline takes what the sentence leaves from the film itself: a `Hold` says
which pixels of the last frame stay, and lays them over the event the model draws, as an
inpainting pipeline pastes back what it keeps. The film's cast (its objects' colours, from
the sentences) tells its objects from a fault of the film (an object no sentence brought),
which is not held. An object that appears "pops in at a free place and stays still": a
model draws it alone, as it draws one object best, and `Hold.enter` lays it on the film
(`lay_on`, which also lays a scene's second object, drawn alone, on the first's clip).
An object a sentence moves, bounces or keeps still changes its place, not its shape: for a
model that rounds a square a little as it redraws it (`hold(..., rigid=True)`), the film's
own pixels of it follow the path the model draws (`move_rigidly`), and one it grows or
shrinks is the film's own, scaled as the model draws it grow or shrink (`resized`).
An object that disappears "shrinks to nothing": as it shrinks, a model draws its last
pixels a little off its colour (a cyan circle's end read as blue), so in that event nothing
but the vanishing object is the model's to draw (`Hold.vanishing`): any other object it
draws that the film did not have is painted out; with `rigid`, the vanishing object itself is
the film's own, shrunk away as the model draws it shrink (`resized`). And once every object
has gone, a scene change shows its new background alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, signal

from ..nn.weighting import FOREGROUND_THRESHOLD
from ..world.language import ParseError, caption, parse
from ..world.scene import GAP
from ..world.spec import BACKGROUNDS, COLORS, GROWTH, SIZES, ZOOM, AppearSentence, CameraSentence, DisappearSentence, MoveSentence, ObjectSpec, SceneChangeSentence, SceneSpec, Sentence
from .grounding import medium_caption, moving_caption

EIGHT = np.ones((3, 3), dtype=bool)
FAR = FOREGROUND_THRESHOLD * 127.5  # an object's pixel: this far (summed over RGB, 0-255) from its frame's median colour
NOISE = 5  # an object's pixel is farther from the background than this many times the frame's grain
RIGID = ("right", "left", "up", "down", "bounces", "still")  # the motions that move an object without changing its shape or size
SIZED = {"grows": GROWTH, "shrinks": 1 / GROWTH, "vanishes": 0.0}  # what changes an object's size, not its shape ("disappears": "vanishes"), and the world's change over an event
LEAST = 12  # pixels: an object is at least this large (0.3 % of a 64x64 frame, the judge's least); a star is smaller


def meaning_of(sentence: str) -> Sentence | None:
    """What the world reads in `sentence`; None where it cannot read it."""
    try:
        return parse(sentence)
    except ParseError:
        return None


def story_casts(sentences: Sequence[str]) -> list[frozenset[str] | None]:
    """Per sentence of a story, the colours of the objects the film should show as its event
    starts: the first scene's, then one more for each "appears" and one fewer after each
    "disappears". None for the first sentence, and from a sentence the world cannot read on."""
    casts: list[frozenset[str] | None] = []
    cast: frozenset[str] | None = None
    for k, sentence in enumerate(sentences):
        casts.append(cast)
        meaning = meaning_of(sentence)
        if k == 0:
            cast = frozenset(o.color for o in meaning.objects) if isinstance(meaning, SceneSpec) else None
        elif meaning is None:
            cast = None
        elif cast is not None and isinstance(meaning, AppearSentence):
            cast = cast | {meaning.color}
        elif cast is not None and isinstance(meaning, DisappearSentence):
            cast = cast - {meaning.color}
    return casts


def backdrop_distance(frame: np.ndarray) -> np.ndarray:
    """[H, W] float32: each pixel's distance from `frame`'s median colour (its background),
    summed over RGB (0-255)."""
    return np.abs(frame.astype(np.float32) - np.median(frame.reshape(-1, 3), axis=0)).sum(-1)


def grain(frame: np.ndarray) -> float:
    """How noisy `frame` [H, W, 3] uint8 is: the median distance of a pixel from the median of
    its 3x3 neighbourhood, summed over RGB (0-1 for phenaki-shapes' frames, 16-25 for
    imagen-video-shapes', whose backgrounds keep some of the diffusion's noise)."""
    return float(np.median(np.abs(frame.astype(np.float32) - ndimage.median_filter(frame, size=(3, 3, 1))).sum(-1)))


def objects_of(frame: np.ndarray, threshold: float = FAR, least: int = LEAST) -> tuple[np.ndarray, int]:
    """The objects of `frame` [H, W, 3] uint8: 8-connected regions of pixels farther than
    `threshold` from the frame's median colour, and farther than NOISE times its `grain` (on a
    noisy background the grain would join into one region), of at least `least` pixels.
    Returns (labels [H, W] int, 0 = none, regions 1..n, n)."""
    labels, n = ndimage.label(backdrop_distance(frame) > max(threshold, NOISE * grain(frame)), structure=EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.flatnonzero(sizes[1:] >= least) + 1
    relabel = np.zeros(n + 1, dtype=labels.dtype)
    relabel[keep] = np.arange(1, len(keep) + 1)
    return relabel[labels], len(keep)


def nearest(color: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    """The name in `table` whose RGB is nearest `color` [3]."""
    return list(table)[int(((np.array(list(table.values()), dtype=np.float32) - color) ** 2).sum(-1).argmin())]


def color_word(pixels: np.ndarray) -> str:
    """The object colour nearest the median of `pixels` [N, 3]."""
    return nearest(np.median(pixels.astype(np.float32), axis=0), COLORS)


def core_color(frame: np.ndarray, region: np.ndarray, far: np.ndarray | None = None) -> str:
    """The colour word of the object at `region` [H, W] bool of `frame`, told by its core: its
    tenth of pixels farthest from the frame's median colour (`far`, `backdrop_distance`),
    since most pixels of a small object are its anti-aliased edge."""
    far = backdrop_distance(frame) if far is None else far
    return color_word(frame[region & (far >= np.percentile(far[region], 90))])


def colored_objects(frame: np.ndarray, least: int = LEAST) -> list[tuple[np.ndarray, str]]:
    """Each object of `frame` [H, W, 3] uint8 (`objects_of`, of at least `least` pixels): its
    pixels [H, W] bool and its colour word, told by its core (`core_color`)."""
    labels, n = objects_of(frame, least=least)
    far = backdrop_distance(frame)
    return [(region, core_color(frame, region, far)) for region in (labels == k for k in range(1, n + 1))]


def blobs_of(frame: np.ndarray, color: str, least: int = LEAST) -> list[np.ndarray]:
    """[H, W] bool per object of `frame` (of at least `least` pixels) whose colour word is
    `color` (`colored_objects`)."""
    return [region for region, word in colored_objects(frame, least) if word == color]


def largest_of(frame: np.ndarray, color: str) -> np.ndarray:
    """[H, W] bool: the largest object of `frame` whose colour word is `color` (`blobs_of`),
    none if there is no such object."""
    return max(blobs_of(frame, color), key=np.sum, default=np.zeros(frame.shape[:2], bool))


def others_of(frame: np.ndarray, color: str, besides: np.ndarray | None = None) -> np.ndarray:
    """[H, W] bool: the objects of `frame` of another colour than `color` (`colored_objects`);
    with `besides` [H, W] bool, only those that do not touch it."""
    others = [region for region, word in colored_objects(frame) if word != color and (besides is None or not (region & besides).any())]
    return np.any([np.zeros(frame.shape[:2], bool), *others], axis=0)


def painted_out(frame: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """A copy of `frame` [H, W, 3] uint8 with `pixels` [H, W] bool painted over with its
    background (its median colour)."""
    out = frame.copy()
    out[pixels] = np.median(frame.reshape(-1, 3), axis=0).astype(np.uint8)
    return out


def rim(pixels: np.ndarray) -> np.ndarray:
    """`pixels` [H, W] bool and the pixels next to them: an object with its anti-aliased edge."""
    return ndimage.binary_dilation(pixels, structure=EIGHT)


@dataclass
class Hold:
    """What a story event keeps of the film's last `frame` [H, W, 3] uint8: the objects its
    sentence leaves where they are (`held`) and the one it names (`named`, [H, W] bool each,
    without their rims); `new_backdrop` when the sentence changes the background; `enters`,
    the object an "appears" sentence brings, or one a motion sentence moves that the film has
    lost; `vanishing`, the colour of the object a "disappears" sentence shrinks away, the
    only one the event may draw; `rigid`, the colour of the named object when its motion
    keeps its shape, so that the film's own pixels of it follow the path the event draws when
    it moves, bounces or stays still (`RIGID`, `move_rigidly`), or are scaled as the event
    draws it grow, shrink or vanish (`scale`, the world's change of its size over the event,
    `SIZED`, `resized`); `zoom`, the direction ("in" or "out") of a camera zoom whose
    film is carried: the film's last frame scaled as the event zooms (`zoomed`)."""

    frame: np.ndarray
    held: np.ndarray
    named: np.ndarray
    new_backdrop: bool = False
    enters: ObjectSpec | None = None
    vanishing: str | None = None
    rigid: str | None = None
    scale: float | None = None
    zoom: str | None = None

    @property
    def entrance(self) -> str:
        """The caption that draws the object `enters` alone on the film's background: "a yellow
        triangle stays still in the desert" (an appearance), "a cyan circle moves up in the
        desert" (a lost object a sentence moves)."""
        backdrop = nearest(np.median(self.frame.reshape(-1, 3), axis=0), BACKGROUNDS)
        return caption(SceneSpec(backdrop, (self.enters,)))

    def enter(self, drawn: np.ndarray) -> np.ndarray | None:
        """The event [T, H, W, 3] uint8 in which the object `enters` pops in: the last frame
        held for the event, with the object laid on as `drawn` (a clip of it drawn alone,
        `entrance`) has it (`lay_on`; an appearing object stays still). None when it does
        not land."""
        film = np.repeat(self.frame[None], len(drawn), axis=0)
        return lay_on(film, drawn, self.enters.color, np.broadcast_to(self.held, film.shape[:3]), still=self.enters.motion == "still")

    @property
    def kept(self) -> np.ndarray:
        """[H, W] bool: the pixels that stay as the last frame has them (the held objects and
        their rims, less where the named object's rim reaches, so that it can leave)."""
        return rim(self.held) & ~rim(self.named)

    def alone(self) -> np.ndarray:
        """The last frame with the held objects painted over with its background: the named
        object alone, as a model draws one object best."""
        return painted_out(self.frame, self.kept)

    def apply(self, event: np.ndarray) -> np.ndarray:
        """The event [T, H, W, 3] uint8 a model drew, with what the sentence leaves laid over it."""
        if self.new_backdrop:
            return carry_objects(event, self.frame, self.held)
        if self.zoom:
            return zoomed(event, self.frame, self.zoom)
        if self.rigid is None:
            event = event.copy()
        elif self.scale is None:
            event = move_rigidly(event, self.frame, self.named, [largest_of(f, self.rigid) for f in event])
        elif self.scale:
            drawn = [largest_of(f, self.rigid) for f in event]
            event = resized(event, self.frame, self.named, drawn, size_rate(drawn, self.scale))
        else:  # vanishing: gone by the event's end, as the sentence says, and every drawing of it painted out
            drawn = [np.any([np.zeros(f.shape[:2], bool), *blobs_of(f, self.rigid)], axis=0) for f in event]
            event = resized(event, self.frame, self.named, drawn, -1 / (len(event) - 1))
        if self.vanishing is not None:  # of what the event draws, the vanishing object and what the film had stay
            had = rim(others_of(self.frame, self.vanishing))
            for t, frame in enumerate(event):
                if (new := others_of(frame, self.vanishing, besides=had)).any():
                    event[t] = painted_out(frame, rim(new))
        event[:, self.kept] = self.frame[self.kept]
        return event


def lay_on(film: np.ndarray, drawn: np.ndarray, color: str, clear: np.ndarray, still: bool = False) -> np.ndarray | None:
    """`film` [T, H, W, 3] uint8 with an object of `color` laid on each frame, rim included, as
    `drawn` (a clip of the object drawn alone) has it there: a story's newcomer, or a scene's
    second object. Objects drawn alone land where the model likes to draw one, often on the
    film's own objects, so the object's whole path is moved by the least shift that keeps it
    the world's gap clear of the film's objects (`clear` [T, H, W] bool) and inside the frame
    (`free_shift`; a move does not change a motion). None when a frame of `drawn` shows no such
    object, when it leaves the first frame's place (`still`), or when no shift clears it."""
    objects = np.stack([largest_of(frame, color) for frame in drawn])
    if not all((o & objects[0] if still else o).any() for o in objects):
        return None
    shift = free_shift(objects, clear, math.ceil(GAP * film.shape[1]))
    if shift is None:
        return None
    event = film.copy()
    for t, o in enumerate(objects):
        lay_shifted(event[t], drawn[t], rim(o), shift)
    return event


def move_rigidly(event: np.ndarray, frame: np.ndarray, named: np.ndarray, drawn: Sequence[np.ndarray], still: bool = False) -> np.ndarray:
    """A copy of `event` [T, H, W, 3] uint8 in which an object is the film's own (`named`
    [H, W] bool of its last `frame`, rim and all) laid along the path the event draws for it:
    each frame's drawing of it (`drawn`, [H, W] bool a frame: `largest_of` its colour) painted
    out and the film's laid at its centre. A move, a bounce or staying still changes where an object is, not what it is, and a
    model that redraws it every frame rounds a square's corners a little more each event; so
    the model says where, the film says what. A frame that lost the object takes the centre
    between its neighbours' (a straight path); an event that never shows it stays as drawn.
    `still`: laid in every frame at the median of the centres drawn (the middle of a drawn
    move, `moving_caption`)."""
    seen = [t for t, d in enumerate(drawn) if d.any()]
    if not seen:
        return event.copy()
    centres = np.array([ndimage.center_of_mass(drawn[t]) for t in seen])
    if still:
        centres, seen = np.median(centres, axis=0, keepdims=True), [0]
    path = np.stack([np.interp(np.arange(len(event)), seen, centres[:, axis]) for axis in (0, 1)], axis=1)
    home, pixels = np.array(ndimage.center_of_mass(named)), rim(named)
    moved = np.stack([painted_out(f, rim(d)) for f, d in zip(event, drawn)])
    for t, centre in enumerate(path):
        lay_shifted(moved[t], frame, pixels, tuple(int(v) for v in np.rint(centre - home)))
    return moved


def resized(event: np.ndarray, frame: np.ndarray, named: np.ndarray, drawn: Sequence[np.ndarray], rate: float, start: float = 1.0) -> np.ndarray:
    """A copy of `event` [T, H, W, 3] uint8 in which an object that grows, shrinks or vanishes
    is one drawing of it (`named` [H, W] bool of `frame`, at `start` times its size in the event's
    first frame: in a story the film's own, at x1) scaled about its centre by 1 + `rate`·t at
    frame t (`scaled`), each frame's drawing of it (`drawn`) painted out: the model says how
    fast (`size_rate`), the drawing says what. A model that redraws a square as it shrinks it
    rounds its corners, and a story carries the last of its drawings to its end."""
    out = np.stack([painted_out(f, rim(d)) for f, d in zip(event, drawn)])
    for t in range(len(event)):
        source, pixels = scaled(frame, named, (1 + rate * t) / start)
        lay_shifted(out[t], source, rim(pixels), (0, 0))
    return out


def size_rate(drawn: Sequence[np.ndarray], change: float) -> float:
    """The steady rate a frame, from x1, at which an object drawn as `drawn` ([H, W] bool a
    frame) grows or shrinks: its drawn size fitted by a straight line (`zoom_rate`), kept
    within the world's `change` over the event (`within`); the world's own rate where the
    model loses it in half the frames or more."""
    rate = zoom_rate([(t, int(d.sum())) for t, d in enumerate(drawn) if d.any()], len(drawn))
    return within(rate, change, len(drawn)) if rate is not None else (change - 1) / (len(drawn) - 1)


def within(rate: float, change: float, frames: int) -> float:
    """A steady rate of change of scale a frame, from x1, kept between none and the world's
    `change` over an event of `frames` frames (x1.6 for a zoom in, x1/1.75 for a shrink)."""
    return float(np.clip(rate, *sorted((0.0, (change - 1) / (frames - 1)))))


def sizes_of(frame: np.ndarray) -> dict[str, int]:
    """Each object colour in `frame` [H, W, 3] uint8 (`colored_objects`) and the area of its
    largest object, in pixels."""
    sizes: dict[str, int] = {}
    for region, color in colored_objects(frame):
        sizes[color] = max(sizes.get(color, 0), int(region.sum()))
    return sizes


def zoom_rate(areas: Sequence[tuple[int, float]], frames: int) -> float | None:
    """The steady rate of zoom a frame, from x1, that an object's drawn `areas` (frame, pixels)
    over an event of `frames` frames show: its size a + b·t fitted by a straight line, b / a.
    None when it shows in half the frames or fewer (an object the model drew into another
    colour leaves specks) or the line gives it no size at the event's start."""
    if 2 * len(areas) <= frames:
        return None
    slope, start = np.polyfit([t for t, _ in areas], [math.sqrt(area) for _, area in areas], deg=1)
    return slope / start if start > 0 else None


def zoomed(event: np.ndarray, frame: np.ndarray, camera: str | None = None) -> np.ndarray:
    """The film's last `frame` [H, W, 3] uint8 scaled about the frame's centre as `event`
    [T, H, W, 3] uint8, a camera zoom a model drew from it, scales it: the model says how much
    (each of the film's objects' size as the event draws it, fitted by a straight line, whose
    slope over its start is a steady rate of zoom from x1 as the world zooms, `zoom_rate`; the
    median over objects the event shows in most frames, or, where it shows none of them in
    most frames, all it draws together), the film says what (its objects as they were
    drawn, and its background, stars and all). A model that redraws every object as it zooms draws small ones rounder (a
    triangle shrunk by a zoom out reads as a circle). With the sentence's `camera` ("in" or
    "out"), the rate stays within the world's zoom that way (x1 to x1.6, or to x1/1.6, over
    the event): a drawing that grows its objects in a zoom out, or zooms past x1.6, is a
    model's mistake the film would keep for the rest of the story. Where a zoom out shows more
    than the film had, the event's own background (its objects painted out); an event with
    none of the film's objects stays as drawn."""
    drawn = [sizes_of(f) for f in event]
    rates = [rate for color in sizes_of(frame) if (rate := zoom_rate([(t, sizes[color]) for t, sizes in enumerate(drawn) if color in sizes], len(event))) is not None]
    if not rates:  # the model drew the film's objects into other colours: its objects together
        rates = [rate] if (rate := zoom_rate([(t, sum(sizes.values())) for t, sizes in enumerate(drawn) if sizes], len(event))) is not None else []
    if not rates:
        return event.copy()
    rate = float(np.median(rates))
    if camera is not None:
        rate = within(rate, ZOOM if camera == "in" else 1 / ZOOM, len(event))
    height, width = frame.shape[:2]
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    film = frame.astype(np.float32)
    out = event.copy()
    for t in range(len(event)):
        scale = max(1 + rate * t, 0.1)
        # pixel p of the frame shows the film at centre + (p - centre) / scale
        laid = np.stack([ndimage.affine_transform(film[..., c], np.eye(2) / scale, offset=centre - centre / scale, order=1, cval=np.nan) for c in range(3)], axis=-1)
        inside = ~np.isnan(laid).any(-1)
        if not inside.all():
            out[t] = painted_out(out[t], rim(objects_of(out[t])[0] > 0))
        out[t][inside] = np.clip(np.rint(laid[inside]), 0, 255).astype(np.uint8)
    return out


def steadied(frames: np.ndarray, sentence: str) -> np.ndarray:
    """`frames` [T, H, W, 3] uint8, a clip drawn for `sentence` (a scene the world reads, not a
    zoom; else returned as is) from `shape_caption(sentence)`, with each object whose motion
    keeps its shape and size (`RIGID`) one steady drawing of it along the path drawn
    (`steady_shape`, `move_rigidly`), or, if it stays still, at the middle of that path. A
    model draws such an object once a frame, each a little off (a square's corner rounded in
    one frame, sharp in the next), and a story carries whichever it drew last."""
    if (scene := scene_of(sentence)) is None:
        return frames
    for obj, drawn_as in zip(scene.objects, scene_of(shape_caption(sentence)).objects):
        drawn = [largest_of(f, obj.color) for f in frames]
        if obj.motion in RIGID:
            if (shape := steady_shape(frames, drawn)) is not None:
                shape = scaled(*shape, SIZES[obj.size or "medium"] / SIZES[drawn_as.size or "medium"])
                frames = move_rigidly(frames, *shape, drawn, still=obj.motion == "still")
        elif obj.motion in SIZED:
            frames = steadily_resized(frames, drawn, SIZED[obj.motion])
    return frames


def steadily_resized(frames: np.ndarray, drawn: Sequence[np.ndarray], change: float) -> np.ndarray:
    """`frames` [T, H, W, 3] uint8 with an object that grows or shrinks (`drawn`, [H, W] bool
    a frame) one steady drawing of it scaled about its place as the model draws it grow
    (`size_rate`, `resized`). The drawing is taken where the object is drawn largest (the
    frames within x1.2 of its largest size, as the judge reads a shape where it is largest),
    each frame's drawing scaled to that size and their median kept (`steady_shape`), and laid
    at the median of the centres drawn: the world grows an object about its centre."""
    rate = size_rate(drawn, change)
    sizes = 1 + rate * np.arange(len(frames))
    top = sizes.max()
    near = [t for t in range(len(frames)) if drawn[t].any() and sizes[t] * 1.2 >= top]
    if not near:
        return frames
    alike = [scaled(frames[t], drawn[t], top / sizes[t]) for t in near]
    if (shape := steady_shape(np.stack([f for f, _ in alike]), [p for _, p in alike])) is None:
        return frames
    frame, pixels = shape
    centre = np.median([ndimage.center_of_mass(d) for d in drawn if d.any()], axis=0)
    shift = tuple(int(v) for v in np.rint(centre - np.array(ndimage.center_of_mass(pixels))))
    placed, at = painted_out(frame, rim(pixels)), np.zeros_like(pixels)
    lay_shifted(placed, frame, rim(pixels), shift)
    lay_shifted(at, pixels, pixels, shift)
    return resized(frames, placed, at, drawn, rate, start=top)


def shape_caption(sentence: str) -> str:
    """What a pipeline draws a scene from before `steadied` keeps one drawing of each rigid
    object: `sentence` with each object that stays still said to move (`moving_caption`; the
    median of a moving object's drawings is truer to its shape, and `steadied` lays it still)
    and each small one said to be medium-sized (`medium_caption`; `steadied` scales it back),
    or `sentence` itself (no such object, it is said in held-out words, or a zoom, whose
    objects `steadied` leaves as drawn)."""
    if scene_of(sentence) is None:
        return sentence
    moving = moving_caption(sentence) or sentence
    return medium_caption(moving, RIGID) or moving


def scene_of(sentence: str) -> SceneSpec | None:
    """What the world reads in `sentence` when it is a scene whose objects move themselves (no
    camera move); else None."""
    meaning = meaning_of(sentence)
    return meaning if isinstance(meaning, SceneSpec) and not meaning.camera else None


def steady_shape(frames: np.ndarray, drawn: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """An object as `frames` [T, H, W, 3] uint8 draw it (`drawn`, [H, W] bool a frame),
    steadied: each frame's drawing moved onto the first one's centre, the pixels most of them
    cover, and per pixel the median of their colours (its rim too). Returns (a frame [H, W, 3]
    with that drawing at the first centre, its pixels [H, W] bool), None if no frame shows it."""
    seen = [(f, o) for f, o in zip(frames, drawn) if o.any()]
    if not seen:
        return None
    centres = [np.array(ndimage.center_of_mass(o)) for _, o in seen]
    aligned, covered = [], []
    for (f, o), centre in zip(seen, centres):
        dy, dx = (int(v) for v in np.rint(centres[0] - centre))
        aligned.append(ndimage.shift(f.astype(np.float32), (dy, dx, 0), order=0, cval=np.nan))
        covered.append(ndimage.shift(o, (dy, dx), order=0, cval=False))
    pixels = np.sum(covered, axis=0) * 2 > len(seen)
    if not pixels.any():
        return None
    frame = frames[0].copy()
    around = rim(pixels)
    frame[around] = np.rint(np.nanmedian(np.stack(aligned)[:, around], axis=0)).astype(np.uint8)
    return frame, pixels


def scaled(frame: np.ndarray, pixels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The object at `pixels` [H, W] bool of `frame` [H, W, 3] uint8 (a `steady_shape`) scaled
    by `factor` about its centre, its rim with it: each new pixel the mean of the old ones it
    covers (a box filter over the exact region it maps from), so a square's corners stay as
    sharp as drawn and its edge is anti-aliased as a drawing's is; scaled under a pixel, it is
    gone. Returns (the frame, the object's new pixels)."""
    if factor == 1:
        return frame, pixels
    around = rim(pixels)
    ys, xs = np.nonzero(around)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # the rim's box, in pixel edges
    out, laid = painted_out(frame, around), np.zeros_like(pixels)
    if factor * min(y1 - y0, x1 - x0) < 1:
        return out, laid
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top, bottom = math.floor(cy - (cy - y0) * factor), math.ceil(cy + (y1 - cy) * factor)
    left, right = math.floor(cx - (cx - x0) * factor), math.ceil(cx + (x1 - cx) * factor)
    pad = max(*frame.shape[:2], math.ceil(1 / factor) + 1)  # the region a shrink maps from reaches 1 / factor past the box
    alone = np.pad(painted_out(frame, ~around), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    box = (cx + (left - cx) / factor + pad, cy + (top - cy) / factor + pad, cx + (right - cx) / factor + pad, cy + (bottom - cy) / factor + pad)
    size = (right - left, bottom - top)
    crop = np.asarray(Image.fromarray(alone).resize(size, Image.BOX, box=box))
    mask = np.asarray(Image.fromarray(np.pad(pixels, pad).astype(np.uint8) * 255).resize(size, Image.BOX, box=box)) >= 128
    at_y, at_x = np.mgrid[top:bottom, left:right]
    inside = (at_y >= 0) & (at_y < frame.shape[0]) & (at_x >= 0) & (at_x < frame.shape[1])
    out[at_y[inside], at_x[inside]] = crop[inside]
    laid[at_y[inside], at_x[inside]] = mask[inside]
    return out, laid


def lay_shifted(frame: np.ndarray, source: np.ndarray, pixels: np.ndarray, shift: tuple[int, int]) -> None:
    """Copy `pixels` [H, W] bool of `source` [H, W, 3] onto `frame` (in place), `shift` (dy, dx)
    pixels away; what would land outside the frame is dropped."""
    dy, dx = shift
    ys, xs = np.nonzero(pixels)
    inside = (ys + dy >= 0) & (ys + dy < pixels.shape[0]) & (xs + dx >= 0) & (xs + dx < pixels.shape[1])
    ys, xs = ys[inside], xs[inside]
    frame[ys + dy, xs + dx] = source[ys, xs]


def lay_second(sentence: str, first: np.ndarray) -> Callable[[np.ndarray], np.ndarray | None]:
    """How a two-object scene's second object, drawn alone (`second_object_caption`), is laid
    on `first` [T, H, W, 3] uint8, the clip of its first object drawn alone: `lay_on`, clear of
    that object in every frame."""
    clear = np.stack([objects_of(frame)[0] > 0 for frame in first])
    color = parse(sentence).objects[1].color
    return lambda drawn: lay_on(first, drawn, color, clear)


def free_shift(objects: np.ndarray, clear: np.ndarray, gap: int) -> tuple[int, int] | None:
    """The least shift (dy, dx) of an object's path `objects` [T, H, W] bool that keeps it
    inside the frame and more than `gap` pixels from `clear` [T, H, W] bool in every frame;
    None if there is none. Overlaps at every shift at once: a correlation per frame."""
    height, width = objects.shape[1:]
    near = np.stack([ndimage.binary_dilation(c, structure=EIGHT, iterations=gap) if c.any() else c for c in clear])
    hits = sum((signal.fftconvolve(z.astype(np.float32), o[::-1, ::-1].astype(np.float32)) for z, o in zip(near, objects) if z.any()), start=np.zeros((2 * height - 1, 2 * width - 1), np.float32))
    ys, xs = np.nonzero(objects.any(0))
    dy, dx = np.mgrid[-ys.min() : height - ys.max(), -xs.min() : width - xs.max()]
    ok = hits[dy + height - 1, dx + width - 1] < 0.5
    if not ok.any():
        return None
    best = np.argmin(np.where(ok, dy**2 + dx**2, np.iinfo(np.int64).max))
    return int(dy.flat[best]), int(dx.flat[best])


def hold(sentence: str, cast: frozenset[str] | None, frame: np.ndarray, rigid: bool = False, zoom: bool = False) -> Hold | None:
    """What `sentence` leaves of the film whose last frame is `frame` and whose objects have
    the colours `cast` (`story_casts`): each object of the frame (`objects_of`) is told by its
    colour (`color_word`) as the one the sentence names, one it holds, or a fault outside the
    cast. A zoom moves everything: with `zoom`, the film is carried, scaled as the event zooms
    (`Hold.zoom`), else nothing is held. None when nothing is held: a first scene, a sentence
    the world cannot read, an unknown cast, or a frame with no object of the cast, unless the
    sentence brings one (an object appearing on an empty stage is laid on it all the same),
    makes one disappear, moves, grows or shrinks the film's only object (with
    `rigid`: the film's own object is carried, `Hold.rigid`), or changes the scene of a film
    with no objects left (the new background alone, whatever the model draws on it).
    A motion sentence whose object the film has lost (drawn over, or drawn into another
    colour in an earlier event) brings it back as it moves, on the frame with its faults
    painted out with the background."""
    if cast is None:
        return None
    meaning = meaning_of(sentence)
    if zoom and isinstance(meaning, CameraSentence):
        return Hold(frame, np.zeros(frame.shape[:2], bool), np.zeros(frame.shape[:2], bool), zoom=meaning.camera) if objects_of(frame)[1] else None
    if not isinstance(meaning, (MoveSentence, DisappearSentence, AppearSentence, SceneChangeSentence)):
        return None
    appears = isinstance(meaning, AppearSentence)
    named_color = getattr(meaning, "color", None) if not appears else None
    held, named, faults = (np.zeros(frame.shape[:2], bool) for _ in range(3))
    for region, color in colored_objects(frame):
        if color == named_color:
            named |= region
        elif color in cast:
            held |= region
        else:
            faults |= region
    enters = ObjectSpec(meaning.color, meaning.shape, "still", meaning.size) if appears else None
    if isinstance(meaning, MoveSentence) and meaning.color in cast and not named.any():
        enters = ObjectSpec(meaning.color, meaning.shape, meaning.motion)
        frame = painted_out(frame, rim(faults) & ~rim(held))
    vanishing = meaning.color if isinstance(meaning, DisappearSentence) else None
    motion = "vanishes" if vanishing else meaning.motion if isinstance(meaning, MoveSentence) else None
    carried = meaning.color if rigid and (motion in RIGID or motion in SIZED) and named.any() else None
    scale = SIZED.get(motion) if carried is not None else None
    new_backdrop = isinstance(meaning, SceneChangeSentence)  # on an empty stage (no cast) it shows its background alone
    return Hold(frame, held, named, new_backdrop, enters, vanishing, carried, scale) if held.any() or enters or vanishing or carried or (new_backdrop and not cast) else None


def opacity(frame: np.ndarray, objects: np.ndarray, backdrop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much of each pixel of `frame` [H, W, 3] float32 is object rather than `backdrop` [3]
    around `objects` [H, W] bool: (zone [H, W] bool, the objects with their rims; a [N] float32,
    per pixel of the zone). A pixel of an edge is a mix, pixel = a·object + (1 - a)·backdrop,
    each object's colour its median; a pixel inside it is all object (one darker than that
    median is no edge)."""
    labels, n = ndimage.label(objects, structure=EIGHT)
    if not n:
        return np.zeros(objects.shape, bool), np.zeros(0, np.float32)
    colors = np.stack([np.median(frame[labels == k], axis=0) for k in range(1, n + 1)])
    labels = ndimage.grey_dilation(labels, size=(3, 3))  # each object with its rim
    zone = labels > 0
    away = colors[labels[zone] - 1] - backdrop
    a = np.clip(((frame[zone] - backdrop) * away).sum(-1) / np.maximum((away**2).sum(-1), 1e-6), 0, 1)
    a[ndimage.binary_erosion(objects, structure=EIGHT)[zone]] = 1
    return zone, a


def carry_objects(event: np.ndarray, frame: np.ndarray, held: np.ndarray) -> np.ndarray:
    """The `held` objects [H, W] bool of the film's last `frame` [H, W, 3] carried onto `event`
    [T, H, W, 3] (uint8), an event drawn with a new background: the event's own objects
    (`objects_of`, with their rims) are painted over with its frame's median colour, and each
    held object is lifted off the old background and laid on the new one: a pixel of its edge
    (`opacity` a) becomes pixel + (1 - a)·(new - old)."""
    video, still = event.astype(np.float32), frame.astype(np.float32)
    backdrop = np.median(video.reshape(len(video), -1, 3), axis=1)  # [T, 3]
    old = np.median(still.reshape(-1, 3), axis=0)
    for t in range(len(video)):
        video[t][rim(objects_of(event[t])[0] > 0)] = backdrop[t]
    zone, a = opacity(still, held, old)
    if zone.any():
        video[:, zone] = still[zone] + (1 - a)[:, None] * (backdrop[:, None] - old)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def leaves_backdrop(sentence: str) -> bool:
    """Whether a story sentence leaves the film's background as it is: any the world reads but a
    scene change (and a new scene, which names its own)."""
    meaning = meaning_of(sentence)
    return meaning is not None and not isinstance(meaning, (SceneChangeSentence, SceneSpec))


def starts_as_film(sentence: str) -> bool:
    """Whether a story sentence's event starts as the film's last frame: a motion, a
    disappearance, a zoom (a scene change starts on its new background, and an appearing object
    pops in at the event's start)."""
    return isinstance(meaning_of(sentence), (MoveSentence, DisappearSentence, CameraSentence))


def keep_backdrop(event: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """`event` [T, H, W, 3] uint8 on the background of the film's last `frame` [H, W, 3]: each
    frame's objects (`objects_of`) lifted off the background the model drew onto the film's,
    as `carry_objects` lifts held objects onto a new one (each pixel moved by (1 - a) times
    the difference of the two backgrounds' median colours; a background's grain stays). A
    model that sees the film only as a small copy of its last frame can drift to another
    background, where in the Shapes world only a scene change changes it."""
    video = event.astype(np.float32)
    film = np.median(frame.reshape(-1, 3), axis=0).astype(np.float32)
    for t, drawn in enumerate(np.median(video.reshape(len(video), -1, 3), axis=1)):
        zone, a = opacity(video[t], objects_of(event[t])[0] > 0, drawn)
        share = np.ones(zone.shape, np.float32)
        share[zone] = 1 - a
        video[t] += share[..., None] * (film - drawn)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)
