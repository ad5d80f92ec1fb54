"""FVD-shapes and temporal flicker: how real do generated clips look, and do they shimmer?

FVD (Unterthiner et al., 2018) is the Fréchet distance between Gaussians fitted to a
video classifier's features of real and of generated clips. Published FVD uses an I3D
network trained on Kinetics; those weights cannot be fetched here, so kinema ships its
own small classifier, trained on the Shapes world (`kinema/pretrained/shapes-classifier/`,
trained by `python -m kinema.eval.fvd train`), and calls the number **FVD-shapes**. It is
comparable between kinema models, never with published FVD.

The classifier reads a 64×64×16 clip with four strided 3-D convolutions, pools globally
and projects to a 128-d feature; heads on the feature name the background, the object
colours present, each object's shape, and what each object does (its motion, vanishing,
or the camera's zoom), so the feature must encode what the judge reads and how it moves.

Flicker is the mean absolute frame-to-frame change (0-255) over pixels that are the
background in both frames: a faithful renderer only changes them at moving edges.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, build_from_config, config_dict, load_weights, read_json, read_tensors, register, state_tensors
from ..nn.conv3d import conv3d_stage, mean_max_pool
from ..precision import autocast
from ..world import EVENT_FRAMES, random_event, random_story, render_event
from ..world.judge import background_label, classify
from ..world.spec import BACKGROUNDS, COLORS, MOTIONS, SHAPES

CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "shapes-classifier"
METRIC_NAME = "FVD-shapes"
NOT_COMPARABLE = "FVD-shapes uses kinema's own Shapes-world classifier, not I3D: it is not comparable to published FVD."

# What an object does over an event: its motion, vanishing (a story's "disappears"), or
# the camera's zoom (which moves and scales every object).
ACTIONS: tuple[str, ...] = (*MOTIONS, "vanishes", "zoom in", "zoom out")
_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_COLOR_NAMES = tuple(COLORS)


# ---------------------------------------------------------------- the classifier


@dataclass
class ShapesClassifierConfig:
    width: int = 16  # channels of the first convolution; each later stage doubles them
    feature_dim: int = 128  # the FVD-shapes feature
    frames: int = EVENT_FRAMES  # clip length it reads
    size: int = 64  # frame side it reads (other sizes are resized)
    groups: int = 8  # GroupNorm groups
    num_backgrounds: int = len(BACKGROUNDS)
    num_colors: int = len(COLORS)
    num_shapes: int = len(SHAPES)
    num_actions: int = len(ACTIONS)


class ShapesClassifier(nn.Module):
    """A small 3-D CNN: clip [B, 3, T, H, W] in [-1, 1] → a feature, and what the world drew."""

    def __init__(self, config: ShapesClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ShapesClassifierConfig()
        w = c.width
        self.encoder = nn.Sequential(
            # 64² → 32²; frames kept: motion is read from neighbouring frames at full rate
            nn.Conv3d(3, w, (3, 4, 4), stride=(1, 2, 2), padding=1), nn.GELU(),
            *conv3d_stage(w, 2 * w, (1, 2, 2), c.groups),  # 16×16×16
            *conv3d_stage(2 * w, 4 * w, (2, 2, 2), c.groups),  # 8×8×8
            *conv3d_stage(4 * w, 8 * w, (2, 2, 2), c.groups),  # 4×4×4
        )
        self.project = nn.Linear(16 * w, c.feature_dim)  # from mean and max over space-time (mean_max_pool)
        self.head_background = nn.Linear(c.feature_dim, c.num_backgrounds)
        self.head_present = nn.Linear(c.feature_dim, c.num_colors)
        self.head_shape = nn.Linear(c.feature_dim, c.num_colors * c.num_shapes)
        self.head_action = nn.Linear(c.feature_dim, c.num_colors * c.num_actions)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] → [B, feature_dim]."""
        return self.project(mean_max_pool(self.encoder(video)))

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        h = self.features(video)
        z = F.gelu(h)
        b = h.shape[0]
        return {
            "features": h,
            "background": self.head_background(z),
            "present": self.head_present(z),
            "shape": self.head_shape(z).view(b, c.num_colors, c.num_shapes),
            "action": self.head_action(z).view(b, c.num_colors, c.num_actions),
        }


register("ShapesClassifier", ShapesClassifier, ShapesClassifierConfig)


def save_classifier(model: ShapesClassifier, folder: str | Path, training: dict | None = None) -> Path:
    """config.json (+ `_training` notes, which loading ignores) and model.safetensors, swapped
    in together (a crash never leaves new weights beside an old config); other files in the
    folder (its card) are kept."""
    import shutil

    from safetensors.torch import save_file

    from ..fsutil import atomic_dir

    folder = Path(folder)
    config = config_dict(model)
    if training:
        config["_training"] = training
    with atomic_dir(folder) as tmp:
        for kept in folder.iterdir() if folder.is_dir() else ():
            if kept.is_file() and kept.name not in (WEIGHTS_NAME, CONFIG_NAME):
                shutil.copy2(kept, tmp / kept.name)
        save_file(state_tensors(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_classifier(folder: str | Path = CLASSIFIER_DIR) -> ShapesClassifier:
    """The classifier saved in `folder` (default: the shipped one), in eval mode; built
    from its config by the checkpoint registry and read with safetensors only."""
    folder = Path(folder)
    model = build_from_config(read_json(folder / CONFIG_NAME), str(folder / CONFIG_NAME))
    if not isinstance(model, ShapesClassifier):
        raise ValueError(f"{folder} does not hold a ShapesClassifier")
    load_weights(model, read_tensors(folder / WEIGHTS_NAME), folder / WEIGHTS_NAME)
    return model.eval()


@lru_cache(maxsize=1)
def _shipped(folder: str) -> ShapesClassifier:
    return load_classifier(folder)


def default_classifier() -> ShapesClassifier:
    """The shipped classifier, loaded once per process."""
    return _shipped(str(CLASSIFIER_DIR))


def to_input(clips: np.ndarray | Sequence[np.ndarray], config: ShapesClassifierConfig) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) → float [B, 3, T, size, size] in [-1, 1]."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
        raise ValueError(f"clips must be uint8 (B, T, H, W, 3), got {clips.dtype} {clips.shape}")
    if clips.shape[1] != config.frames:
        raise ValueError(f"the classifier reads clips of {config.frames} frames, got {clips.shape[1]}")
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
    if clips.shape[2:4] != (config.size, config.size):
        b, _, t, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w)
        mode = "area" if h > config.size else "bilinear"
        x = F.interpolate(x, size=(config.size, config.size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        x = x.reshape(b, t, 3, config.size, config.size).permute(0, 2, 1, 3, 4)
    return x.contiguous()


@torch.no_grad()
def clip_features(clips: np.ndarray | Sequence[np.ndarray], model: ShapesClassifier | None = None, batch_size: int = 32) -> np.ndarray:
    """FVD-shapes features (N, feature_dim), float64, of uint8 clips (N, 16, H, W, 3)."""
    model = model or default_classifier()
    out = []
    for i in range(0, len(clips), batch_size):
        out.append(model.features(to_input(clips[i : i + batch_size], model.config)).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.feature_dim))


# ---------------------------------------------------------------- the metrics


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) between Gaussians fitted to two feature sets."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 clips per side, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: nudge both diagonals (as pytorch-fid does)
        eps = 1e-6 * np.eye(len(mu_a))
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(value, 0.0)


def real_clips(n: int, seed: int, size: int = 64, stream: int = 0) -> np.ndarray:
    """`n` ground-truth clips (n, 16, size, size, 3) of fresh random scenes of every kind;
    each `stream` is an independent sample."""
    rng = np.random.default_rng([seed, 0xF7D, stream])
    return np.stack([render_event(random_event(rng)[1], size) for _ in range(n)]) if n else np.zeros((0, EVENT_FRAMES, size, size, 3), np.uint8)


def fvd_shapes(generated: np.ndarray | Sequence[np.ndarray], real: np.ndarray | Sequence[np.ndarray], model: ShapesClassifier | None = None) -> float:
    """FVD-shapes between two sets of 16-frame uint8 clips (lower is closer)."""
    model = model or default_classifier()
    return frechet_distance(clip_features(generated, model), clip_features(real, model))


def _background_labels(labels: np.ndarray) -> np.ndarray:
    """Per frame, the judge's background class (-1 if unclassified)."""
    return np.array([background_label(frame) for frame in labels], dtype=np.int64)


def flicker(frames: np.ndarray) -> float | None:
    """Mean absolute change (0-255, over RGB) between consecutive frames at pixels whose
    world colour is the frame's background in both; None if no such pixels (e.g. noise)."""
    frames = np.asarray(frames)
    if len(frames) < 2:
        return None
    labels = classify(frames)
    bg = _background_labels(labels)
    total, count = 0.0, 0
    for t in range(len(frames) - 1):
        if bg[t] < 0 or bg[t] != bg[t + 1]:  # a scene change is not flicker
            continue
        mask = (labels[t] == bg[t]) & (labels[t + 1] == bg[t])
        n = int(mask.sum())
        if n:
            diff = np.abs(frames[t + 1].astype(np.int16) - frames[t].astype(np.int16))[mask]
            total += float(diff.mean(axis=-1).sum())
            count += n
    return total / count if count else None


# ---------------------------------------------------------------- training


def event_labels(event) -> dict[str, np.ndarray]:
    """What the classifier learns to name, read off a world event."""
    c = len(_COLOR_NAMES)
    present = np.zeros(c, np.float32)
    shape = np.full(c, -100, np.int64)  # -100: ignored by cross-entropy (colour absent)
    action = np.full(c, -100, np.int64)
    for thing, act in zip(event.start.things, event.actions):
        k = _COLOR_NAMES.index(thing.color)
        present[k] = 1.0
        shape[k] = SHAPES.index(thing.shape)
        action[k] = ACTIONS.index(f"zoom {event.camera}" if event.camera else act)
    return {"background": np.int64(_BACKGROUND_NAMES.index(event.start.background)), "present": present, "shape": shape, "action": action}


def random_training_event(rng: np.random.Generator, story_share: float = 0.3):
    """A single-caption event, or (`story_share` of the time) a later event of a short
    story, so appearing, vanishing, scene changes and zoomed scales are seen too."""
    if rng.random() < story_share:
        return random_story(rng, int(rng.integers(2, 5)))[1][-1]
    return random_event(rng)[1]


def training_batch(rng: np.random.Generator, batch_size: int, size: int = 64) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    events = [random_training_event(rng) for _ in range(batch_size)]
    clips = np.stack([render_event(e, size) for e in events])
    labels = [event_labels(e) for e in events]
    return clips, {k: torch.from_numpy(np.stack([lab[k] for lab in labels])) for k in labels[0]}


def classifier_loss(out: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    out = {k: v.float() for k, v in out.items()}
    return (
        F.cross_entropy(out["background"], labels["background"])
        + F.binary_cross_entropy_with_logits(out["present"], labels["present"])
        + F.cross_entropy(out["shape"].flatten(0, 1), labels["shape"].flatten(), ignore_index=-100)
        + F.cross_entropy(out["action"].flatten(0, 1), labels["action"].flatten(), ignore_index=-100)
    )


@torch.no_grad()
def held_out_accuracy(model: ShapesClassifier, clips: int = 1000, seed: int = 1_000_003, batch_size: int = 50) -> dict[str, float]:
    """Accuracies on fresh world events drawn with a seed training never uses.

    background: 6-way; colours: every one of the 8 present/absent calls right (exact set);
    colour calls: per colour; shape, action: per object present (action = its motion,
    vanishing, or the camera's zoom)."""
    if clips < 1:
        raise ValueError(f"held-out accuracy needs at least 1 clip, got {clips}")
    model.eval()
    rng = np.random.default_rng(seed)
    hits = {"background": 0, "colours (exact set)": 0, "colour calls": 0, "shape": 0, "action": 0}
    n = objects = 0
    for start in range(0, clips, batch_size):
        x, labels = training_batch(rng, min(batch_size, clips - start))
        out = model(to_input(x, model.config))
        hits["background"] += int((out["background"].argmax(-1) == labels["background"]).sum())
        calls = (out["present"] > 0).float() == labels["present"]
        hits["colours (exact set)"] += int(calls.all(-1).sum())
        hits["colour calls"] += int(calls.sum())
        mask = labels["shape"] >= 0
        hits["shape"] += int((out["shape"].argmax(-1) == labels["shape"])[mask].sum())
        hits["action"] += int((out["action"].argmax(-1) == labels["action"])[mask].sum())
        n += len(x)
        objects += int(mask.sum())
    per = {"background": n, "colours (exact set)": n, "colour calls": n * len(_COLOR_NAMES), "shape": objects, "action": objects}
    return {k: hits[k] / per[k] for k in hits}


def train(
    output: str | Path,
    *,
    steps: int = 3000,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
    max_minutes: float | None = None,
    eval_clips: int = 1000,
    config: ShapesClassifierConfig | None = None,
    log_every: int = 100,
) -> dict:
    """Train the classifier on endless world clips (bf16 autocast where the CPU has it) for
    `steps`, measure held-out accuracy, and save to `output`. The learning rate follows the
    steps alone, so a seed repeats a run; `max_minutes` only cuts it short (unannealed)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ShapesClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(200, steps // 10)
    start, running, done = time.time(), 0.0, 0

    def lr_at(step: int) -> float:
        progress = step / steps
        return lr * min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * progress))

    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, labels = training_batch(rng, batch_size)
        model.train()
        with autocast("cpu"):
            out = model(to_input(x, model.config))
        loss = classifier_loss(out, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        done = step + 1
        if done % log_every == 0:
            print(f"step {done}/{steps}  loss {running / log_every:.4f}  {time.time() - start:.0f}s", flush=True)
            running = 0.0
        if max_minutes is not None and time.time() - start >= max_minutes * 60:
            print(f"stopping at step {done}: {max_minutes} minutes spent", flush=True)
            break
    train_seconds = time.time() - start
    accuracy = held_out_accuracy(model, eval_clips)
    training = {
        "command": "python -m kinema.eval.fvd train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else None,
        "steps": done,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "train_seconds": round(train_seconds, 1),
        "held_out_clips": eval_clips,
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
    }
    save_classifier(model.eval(), output, training)
    print(json.dumps(training, indent=2))
    return training


def clip_count(text: str) -> int:
    """argparse type of a clip count: the held-out accuracy needs at least one clip."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 clip, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kinema.eval.fvd", description="The FVD-shapes feature network.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="Train the Shapes classifier and save it (config.json + model.safetensors).")
    t.add_argument("--output", type=Path, default=CLASSIFIER_DIR)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes (the schedule follows --steps)")
    t.add_argument("--eval-clips", type=clip_count, default=1000, help="fresh events the finished classifier is scored on (checked before training)")
    e = sub.add_parser("accuracy", help="Held-out accuracies of a saved classifier.")
    e.add_argument("folder", type=Path, nargs="?", default=CLASSIFIER_DIR)
    e.add_argument("--clips", type=clip_count, default=1000)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(
            args.output, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            threads=args.threads, max_minutes=args.max_minutes, eval_clips=args.eval_clips,
        )
    else:
        torch.set_num_threads(1)
        print(json.dumps(held_out_accuracy(load_classifier(args.folder), args.clips), indent=2))


if __name__ == "__main__":
    main()
