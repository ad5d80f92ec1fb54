"""One object, drawn once: a second copy painted out.

The Shapes world never holds two objects of one colour (WORLD.md), and its judge reads each
colour's largest blob, so a clip that draws the named object twice can pass. A small video
diffusion base draws a second copy often: of imagen-video-shapes' base samples for eval seed
0's one-object captions, most show the object's colour in two places from the first frame
(two orange circles for "a small orange circle moves to the right over the ocean"), whatever
the guidance, sampler or candidate. The caption names each object once, so a pipeline can
keep each named colour's one object and paint out the rest, as `kinema.data.continuity`
paints out what a story sentence did not bring.

Which copy is the object: the one that is there longest. Blobs of a colour are linked frame
to frame by nearest centre into tracks; the track seen in the most frames (of those, the
largest) is kept, and a blob is painted out only in a frame that shows it beside the kept
track: a frame's lone blob is the object wherever it went. The motion the caption asks for
plays no part: the rule does not read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..world.spec import AppearSentence, DisappearSentence, MoveSentence, SceneSpec
from .continuity import LEAST, blobs_of, meaning_of, painted_out, rim

REACH = 0.25  # a blob continues a track whose last centre is nearer than this share of the frame's width
GAP_FRAMES = 2  # ... and that was last seen at most this many frames before (a copy can blink out a frame)


@dataclass
class Track:
    """One copy's blobs, frame by frame ({frame index: [H, W] bool}), and where it was last seen."""

    blobs: dict[int, np.ndarray] = field(default_factory=dict)
    seen: int = -1  # the last frame it shows in
    centre: np.ndarray = field(default_factory=lambda: np.zeros(2))  # its centre there (y, x)

    def add(self, t: int, blob: np.ndarray, centre: np.ndarray) -> Track:
        self.blobs[t], self.seen, self.centre = blob, t, centre
        return self

    @property
    def pixels(self) -> int:
        return int(sum(b.sum() for b in self.blobs.values()))


def tracks_of(frames: np.ndarray, color: str, least: int) -> list[Track]:
    """The copies of `color` in `frames` [T, H, W, 3] uint8: blobs linked frame to frame, each
    to the nearest track seen in the last GAP_FRAMES frames (within REACH), nearest pairs first."""
    reach = REACH * frames.shape[2]
    tracks: list[Track] = []
    for t, frame in enumerate(frames):
        blobs = blobs_of(frame, color, least)
        centres = [np.array(np.nonzero(b)).mean(1) for b in blobs]
        open_ = [k for k, tr in enumerate(tracks) if t - tr.seen <= GAP_FRAMES]
        pairs = sorted((float(np.linalg.norm(c - tracks[k].centre)), i, k) for i, c in enumerate(centres) for k in open_)
        placed, taken = set(), set()
        for d, i, k in pairs:
            if d < reach and i not in placed and k not in taken:
                tracks[k].add(t, blobs[i], centres[i])
                placed.add(i)
                taken.add(k)
        tracks += [Track().add(t, blobs[i], centres[i]) for i in range(len(blobs)) if i not in placed]
    return tracks


def drawn_once(frames: np.ndarray, colors: Iterable[str], least: int | None = None) -> np.ndarray:
    """`frames` [T, H, W, 3] uint8 with each of `colors` drawn once: in each frame that shows
    the colour's track seen in the most frames (`tracks_of`; of those, the one of the most
    pixels), every other blob of the colour is painted over, rim and all, with the frame's
    background. A frame without that track keeps its largest blob of the colour: the object
    has jumped there, and a lone blob is the object, not a copy. `least`: an object's fewest
    pixels (default: the judge's least, 0.3 % of the frame, at this size)."""
    least = least if least is not None else max(1, round(LEAST * frames.shape[1] * frames.shape[2] / 64**2))
    out = frames.copy()
    for color in colors:
        tracks = tracks_of(out, color, least)
        keep = max(tracks, key=lambda tr: (len(tr.blobs), tr.pixels), default=None)
        for t in range(len(out)):
            blobs = [tr.blobs[t] for tr in tracks if t in tr.blobs]
            if len(blobs) < 2:
                continue
            kept = keep.blobs[t] if t in keep.blobs else max(blobs, key=np.sum)
            copies = np.any([b for b in blobs if b is not kept], axis=0)
            out[t] = painted_out(out[t], rim(copies) & ~kept)
    return out


def named_colors(sentence: str) -> list[str]:
    """The colours of the objects `sentence` names, as the world reads it: a scene's objects,
    or the one object a story sentence moves, brings or takes away; none for a camera move,
    a scene change, or a sentence the world cannot read."""
    meaning = meaning_of(sentence)
    if isinstance(meaning, SceneSpec):
        return [o.color for o in meaning.objects]
    return [meaning.color] if isinstance(meaning, (MoveSentence, AppearSentence, DisappearSentence)) else []
