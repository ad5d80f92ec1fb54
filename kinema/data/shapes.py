"""The Shapes world as an endless, exactly resumable training set.

Batch `i` of rank `r` is drawn from `np.random.default_rng([seed, r, i])`, so a batch is a
pure function of (seed, rank, index): the data position saved in a checkpoint is just the
batch index, a resumed run sees exactly the batches an unbroken run would have, and ranks
never see each other's clips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..batch import Batch
from ..world.language import describe
from ..world.render import render_event
from ..world.sample import SCENE_KINDS, random_event, random_story
from ..world.spec import DEFAULT_SIZE, EVENT_FRAMES, SceneSpec


def to_model_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., T, H, W, 3] -> float video [..., 3, T, H, W] in [-1, 1] (on the
    frames' device: a GPU trainer receives uint8, a quarter of the bytes, and converts there)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    return frames.float().div(127.5).sub(1.0).movedim(-1, -4)


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """Float video [..., 3, T, H, W] in [-1, 1] -> uint8 frames [..., T, H, W, 3]."""
    video = video.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return video.movedim(-4, -1).to(torch.uint8).cpu().numpy()


def parse_scene_mix(text: str) -> dict[str, float]:
    """`"two objects=2"` -> a weight for every scene kind (unnamed kinds weigh 1): how
    often a single-scene training example is of each kind (by default equally often)."""
    mix = dict.fromkeys(SCENE_KINDS, 1.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, weight = item.rpartition("=")
        kind = kind.strip()
        if not sep or kind not in mix:
            raise ValueError(f"a scene mix is KIND=WEIGHT[,KIND=WEIGHT...] with KIND one of {', '.join(SCENE_KINDS)}; got {item!r}")
        try:
            mix[kind] = float(weight)
        except ValueError:
            raise ValueError(f"the weight of {kind!r} must be a number, got {weight!r}") from None
        if mix[kind] < 0:
            raise ValueError(f"the weight of {kind!r} must not be negative, got {weight}")
    if not sum(mix.values()) > 0:
        raise ValueError("a scene mix needs some weight on at least one scene kind")
    return mix


def draw_scene_kind(rng: np.random.Generator, mix: Mapping[str, float] | None) -> str | None:
    """A scene kind drawn by `mix`'s weights (None: let the world draw one uniformly)."""
    if mix is None:
        return None
    kinds = list(mix)
    weights = np.array([mix[k] for k in kinds], dtype=np.float64)
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]


def captioned_example(rng: np.random.Generator, story_share: float, max_story: int = 6, scene_mix: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """One text-to-video training example: (event frames (16, 64, 64, 3), the previous
    event's last frame (1, 64, 64, 3) or None, caption in *train* words).

    With probability `story_share` it is a story's step: a story of 2..max_story sentences
    (so zooms and appearances have happened) whose last sentence is the caption and whose
    previous event ends on the context frame; else a single scene with no context, of a
    kind drawn by `scene_mix` (e.g. more two-object scenes, where binding colours and
    shapes to the right object is learned)."""
    if rng.random() < story_share:
        sentences, events = random_story(rng, int(rng.integers(2, max_story + 1)), check_legible=False)
        return render_event(events[-1]), render_event(events[-2])[-1:], describe(sentences[-1], rng)
    spec, event = random_event(rng, draw_scene_kind(rng, scene_mix), check_legible=False)
    return render_event(event), None, describe(spec, rng)


@dataclass
class ShapesBatch(Batch):
    video: torch.Tensor  # [B, 3, T, H, W] float in [-1, 1]
    specs: list[SceneSpec]  # what each clip shows (feed it to the judge)
    index: int  # the batch index it was drawn for


@dataclass
class ShapesVideoDataset:
    """Endless random Shapes-world events. `dataset.batch(i)` is batch i (any order, any
    time); iterating yields batches `start`, `start + 1`, ..."""

    batch_size: int = 8
    seed: int = 0
    rank: int = 0
    size: int = DEFAULT_SIZE
    frames: int = EVENT_FRAMES
    kinds: tuple[str, ...] | None = None  # restrict to scene kinds, e.g. ("one object",)
    start: int = field(default=0)

    def batch(self, index: int) -> ShapesBatch:
        rng = np.random.default_rng([self.seed, self.rank, index])
        clips, specs = [], []
        for _ in range(self.batch_size):
            kind = None if self.kinds is None else self.kinds[int(rng.integers(len(self.kinds)))]
            spec, event = random_event(rng, kind)
            clips.append(render_event(event, self.size, self.frames))
            specs.append(spec)
        return ShapesBatch(to_model_range(np.stack(clips)), specs, index)

    def __iter__(self):
        index = self.start
        while True:
            yield self.batch(index)
            index += 1
