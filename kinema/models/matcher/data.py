"""What the matcher learns from: Shapes-world clips at the base's 8 frames of 32x32, each with
its train caption and captions of the same scene with one thing changed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ...batch import Batch
from ...data.grounding import OPPOSITE_MOTIONS
from ...data.shapes import draw_scene_kind, to_model_range
from ...text import TextEmbedding, TextEncoder
from ...world.language import describe
from ...world.render import render_event
from ...world.sample import random_event
from ...world.spec import BACKGROUNDS, COLORS, MOTION_VECTORS, MOTIONS, SHAPES, SIZES, SceneSpec
from ..imagen_video.data import base_target

ONE_WAY = tuple(MOTION_VECTORS)  # the motions that go one way: right, left, up, down
SCENES = {"one object": 0.5, "two objects": 0.3, "camera": 0.2}  # single objects are what the reranker sees most
WRONG_WAY_SHARE = 0.7  # a one-way motion changed: this share of the time to another way (the mistake a generator makes)
GRAIN = 0.1  # clips get Gaussian noise of a random std up to this: a generator's backgrounds are grainy


def _other(rng: np.random.Generator, options, besides) -> str:
    kept = [o for o in options if o not in besides]
    return kept[int(rng.integers(len(kept)))]


def runs_one_way(spec: SceneSpec) -> bool:
    """Whether `spec`'s clip played backwards shows another scene: an object moves one way or
    grows or shrinks, or the camera zooms (the world is closed under playing backwards, and a
    bounce or a still object reads the same either way)."""
    return spec.camera is not None or any(o.motion in OPPOSITE_MOTIONS for o in spec.objects)


def changed(spec: SceneSpec, rng: np.random.Generator) -> SceneSpec:
    """`spec` with one thing changed: one object's motion (a one-way motion mostly to another
    way), shape, colour or size (one object only: the two-object grammar names no sizes), the
    background, or a zoom's direction."""
    objects = list(spec.objects)
    k = int(rng.integers(len(objects)))
    o = objects[k]
    kinds = ["motion", "motion", "shape", "color", "background"] + (["size"] if len(objects) == 1 and not spec.camera else [])
    what = "camera" if spec.camera and rng.random() < 0.4 else kinds[int(rng.integers(len(kinds)))]
    if what == "motion" and spec.camera:  # a zoom's objects stay still
        what = "shape"
    if what == "camera":
        return dataclasses.replace(spec, camera="out" if spec.camera == "in" else "in")
    if what == "background":
        return dataclasses.replace(spec, background=_other(rng, BACKGROUNDS, {spec.background}))
    if what == "motion":
        way = o.motion in ONE_WAY and rng.random() < WRONG_WAY_SHARE
        o = dataclasses.replace(o, motion=_other(rng, ONE_WAY if way else MOTIONS, {o.motion}))
    elif what == "shape":
        o = dataclasses.replace(o, shape=_other(rng, SHAPES, {o.shape}))
    elif what == "color":
        o = dataclasses.replace(o, color=_other(rng, COLORS, {x.color for x in objects}))
    else:
        o = dataclasses.replace(o, size=_other(rng, SIZES, {o.size or "medium"}))
    objects[k] = o
    return dataclasses.replace(spec, objects=tuple(objects))


@dataclass
class MatcherBatch(Batch):
    video: torch.Tensor  # [B, 3, 8, 32, 32] in [-1, 1]
    text: TextEmbedding  # B captions, then B x negatives changed captions (clip by clip)
    negatives: int
    backwards: torch.Tensor  # [B] bool: the clip played backwards is a negative for its caption (runs_one_way)


@dataclass
class MatcherData:
    """Batch i of rank r is a pure function of (seed, r, i), so a resumed run sees the same data."""

    text_encoder: TextEncoder
    batch_size: int = 32
    negatives: int = 4
    seed: int = 0
    rank: int = 0
    backwards: bool = False  # mark the clips whose reverse is a negative (matching_loss then asks the clip over its reverse)

    @torch.no_grad()
    def batch(self, index: int) -> MatcherBatch:
        rng = np.random.default_rng([self.seed, self.rank, index])
        clips, captions, changes, one_way = [], [], [], []
        for _ in range(self.batch_size):
            spec, event = random_event(rng, draw_scene_kind(rng, SCENES), check_legible=False)
            clips.append(render_event(event))
            one_way.append(self.backwards and runs_one_way(spec))
            captions.append(describe(spec, rng))
            changes += [describe(changed(spec, rng), rng) for _ in range(self.negatives)]
        video = base_target(to_model_range(np.stack(clips)))
        noise = torch.from_numpy(rng.standard_normal(video.shape, dtype=np.float32))
        video = video + noise * torch.from_numpy(rng.uniform(0, GRAIN, (len(clips), 1, 1, 1, 1)).astype(np.float32))
        return MatcherBatch(video, self.text_encoder.encode(captions + changes), self.negatives, torch.tensor(one_way, dtype=torch.bool))
