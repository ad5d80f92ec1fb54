"""Draw events as frames: flat colours, anti-aliased edges, at any square size.

Edges are anti-aliased by coverage: each pixel is sampled on a 4x4 sub-grid and blends
the object's colour over what is below by the fraction of samples inside the shape.
Only the pixels under an object's bounding box are sampled, so a 64x64 clip of 16 frames
takes about a millisecond per object-frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .scene import Event, Thing
from .spec import BACKGROUNDS, COLORS, DEFAULT_SIZE, EVENT_FRAMES, NUM_STARS, STAR_RGB

SUPERSAMPLE = 4


def coverage(thing: Thing, size: int) -> tuple[slice, slice, np.ndarray]:
    """The fraction of each pixel that the shape covers, over its bounding box."""
    half = thing.side * size / 2
    cx, cy = thing.x * size, thing.y * size
    x0, x1 = max(int(np.floor(cx - half)), 0), min(int(np.ceil(cx + half)), size)
    y0, y1 = max(int(np.floor(cy - half)), 0), min(int(np.ceil(cy + half)), size)
    if x1 <= x0 or y1 <= y0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0))
    ss = SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * ss) + 0.5) / ss
    ys = y0 + (np.arange((y1 - y0) * ss) + 0.5) / ss
    dx = xs[None, :] - cx
    dy = ys[:, None] - cy
    if thing.shape == "circle":
        inside = dx**2 + dy**2 <= half**2
    elif thing.shape == "square":
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    elif thing.shape == "triangle":
        # apex up at (cx, cy - half); the base, as wide as the triangle is tall, at cy + half
        depth = dy + half  # distance below the apex
        inside = (depth >= 0) & (dy <= half) & (np.abs(dx) <= depth / 2)
    else:
        raise ValueError(f"unknown shape {thing.shape!r}")
    cover = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return slice(y0, y1), slice(x0, x1), cover


def stars(seed: int) -> np.ndarray:
    """The night sky's 12 fixed star positions (world coordinates) for a scene."""
    return np.random.default_rng(seed).uniform(0.03, 0.97, size=(NUM_STARS, 2))


def render_frame(background: str, things: Iterable[Thing], size: int, star_seed: int = 0, zoom: float = 1.0) -> np.ndarray:
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = BACKGROUNDS[background]
    if background == "night":
        dot = max(1, round(size / 64 * zoom))
        for sx, sy in stars(star_seed):
            px = int(np.floor((0.5 + (sx - 0.5) * zoom) * size - dot / 2 + 0.5))
            py = int(np.floor((0.5 + (sy - 0.5) * zoom) * size - dot / 2 + 0.5))
            if 0 <= px <= size - dot and 0 <= py <= size - dot:
                canvas[py : py + dot, px : px + dot] = STAR_RGB
    for thing in things:
        if thing.side <= 0:
            continue
        ys, xs, cover = coverage(thing, size)
        alpha = cover[..., None].astype(np.float32)
        canvas[ys, xs] = canvas[ys, xs] * (1 - alpha) + np.asarray(COLORS[thing.color], np.float32) * alpha
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_event(event: Event, size: int = DEFAULT_SIZE, frames: int = EVENT_FRAMES) -> np.ndarray:
    """One event as uint8 frames (T, H, W, 3); frame 0 is t = 0 and the last is t = 1."""
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        t = i / (frames - 1)
        out[i] = render_frame(event.start.background, event.at(t), size, event.start.star_seed, event.start.zoom * event.scale(t))
    return out


def render_events(events: Iterable[Event], size: int = DEFAULT_SIZE, frames: int = EVENT_FRAMES) -> Iterator[np.ndarray]:
    """Stream a story event by event, so a film of any length needs one event of memory."""
    for event in events:
        yield render_event(event, size, frames)
