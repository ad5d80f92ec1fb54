"""What each stage of the Imagen Video cascade sees, in training and at sampling.

    base  8 frames at 32x32 (4 fps: every other frame of the 16-frame event, 2x2-averaged),
          conditioned on text and, in a story, on the previous event's last frame
    tsr   16 frames at 32x32 (8 fps), conditioned on the base's 8 frames (each repeated twice,
          plus a channel marking the frames the base made)
    ssr   16 frames at 64x64, conditioned on the 32x32 clip, upsampled

The low-resolution inputs of tsr and ssr go through noise-conditioning augmentation: in
training to a random level, at sampling to a fixed small one; the stage is told the level.

Training examples: a share are a story's step (the previous event's last frame as context,
the story sentence as caption, as for Phenaki); the rest single events. Captions are
canonical or *train* paraphrases, never held-out ones. Batch i of rank r is a pure
function of (seed, r, i), noise augmentation included, so resumed runs see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ...data.grounding import reversed_motion_caption, wrong_way_caption
from ...data.shapes import captioned_example, to_model_range
from ...diffusion import CaptionNegatives, DiffusionBatch, GaussianDiffusion, NoiseAugmentation
from ...nn.attention import trim_padding
from ...nn.unet import VideoUNetConfig

if TYPE_CHECKING:
    from ...text import TextEncoder


@dataclass(frozen=True)
class StageSpec:
    frames: int
    size: int
    cond_channels: int
    noise_aug: bool


STAGES: dict[str, StageSpec] = {
    "base": StageSpec(frames=8, size=32, cond_channels=4, noise_aug=False),  # context frame (3) + has-context flag
    "tsr": StageSpec(frames=16, size=32, cond_channels=4, noise_aug=True),  # repeated base frames (3) + kept-frame flag
    "ssr": StageSpec(frames=16, size=64, cond_channels=3, noise_aug=True),  # upsampled 32x32 clip
}

# Sizes for the Shapes world. "small" is what ships (≈ 28 MB in bf16 with a distilled base);
# "tiny" is for tests. Attention sits only at 8x8 feature maps: the world's shapes are flat, so
# convolutions carry most of the work, and the CPU budget (a 64x64 clip in ≤ 5 s) is tight.
PRESETS: dict[str, dict[str, dict]] = {
    "small": {
        "base": dict(channels=40, channel_mults=(1, 2, 3), attention_resolutions=(8,), heads=4, dim_head=32),
        "tsr": dict(channels=32, channel_mults=(1, 2, 3), attention_resolutions=(8,), heads=4, dim_head=24),
        "ssr": dict(channels=32, channel_mults=(1, 2, 3), attention_resolutions=(8,), heads=4, dim_head=24, patch_size=2),
    },
    "tiny": {
        stage: dict(channels=16, channel_mults=(1, 1, 2), attention_resolutions=(8,), heads=2, dim_head=8, ff_mult=1.0, **extra)
        for stage, extra in (("base", {}), ("tsr", {}), ("ssr", {"patch_size": 2}))
    },
}

# Hard negatives for a motion's direction (`kinema train imagen-video --direction-negatives`):
# caption, the batch's rng -> the caption sent another way, or None.
DIRECTION_NEGATIVES = {
    "reversed": lambda caption, rng: reversed_motion_caption(caption),
    "wrong-way": wrong_way_caption,
}


def stage_config(stage: str, preset: str = "small", text_dim: int = 384, **overrides) -> VideoUNetConfig:
    """The VideoUNetConfig of a stage at a preset size."""
    check_stage(stage)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = STAGES[stage]
    fields = {**PRESETS[preset][stage], **overrides}
    return VideoUNetConfig(
        cond_channels=spec.cond_channels, frames=spec.frames, sample_size=spec.size, noise_aug=spec.noise_aug, text_dim=text_dim, **fields
    )


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the cascade's stages are {', '.join(STAGES)}")


# ---- resolution and frame-rate changes
def downsample(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C, T, H/2, W/2] by 2x2 averaging."""
    B = video.shape[0]
    return rearrange(F.avg_pool2d(rearrange(video, "b c t h w -> (b t) c h w"), 2), "(b t) c h w -> b c t h w", b=B)


def upsample(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C, T, 2H, 2W], bilinear."""
    B = video.shape[0]
    frames = F.interpolate(rearrange(video, "b c t h w -> (b t) c h w"), scale_factor=2.0, mode="bilinear", align_corners=False)
    return rearrange(frames, "(b t) c h w -> b c t h w", b=B)


def base_target(event: torch.Tensor) -> torch.Tensor:
    """The base stage's clip: every other frame of a 64x64 event, at 32x32."""
    return downsample(event[:, :, ::2])


# ---- conditioning inputs (shared by training data and the pipeline)
def base_cond(context: torch.Tensor | None, has_context: torch.Tensor, frames: int = 8) -> torch.Tensor:
    """[B, 4, frames, 32, 32]: the previous last frame [B, 3, 1, 32, 32] on every frame (zeros
    where there is none) and a has-context flag channel."""
    B = has_context.shape[0]
    flag = has_context.float().reshape(B, 1, 1, 1, 1)
    if context is None:
        context = torch.zeros(B, 3, 1, 32, 32, device=has_context.device)
    context = (context * flag).expand(-1, -1, frames, -1, -1)
    return torch.cat([context, flag.expand(-1, 1, frames, *context.shape[-2:])], dim=1)


def tsr_cond(low_fps: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] at 4 fps -> [B, 4, 2T, H, W]: each frame twice, and a flag channel that
    is 1 on the frames the base made (the even ones)."""
    repeated = low_fps.repeat_interleave(2, dim=2)
    flag = torch.zeros_like(repeated[:, :1])
    flag[:, :, ::2] = 1
    return torch.cat([repeated, flag], dim=1)


def ssr_cond(low_res: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, 32, 32] -> [B, 3, T, 64, 64]."""
    return upsample(low_res)


def stage_inputs(stage: str, event: torch.Tensor, context: torch.Tensor | None, has_context: torch.Tensor, augment: NoiseAugmentation, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """(target x0, cond kwargs without text) of a stage, from 64x64 events [B, 3, 16, 64, 64]
    and optional previous last frames [B, 3, 1, 64, 64]."""
    check_stage(stage)
    if stage == "base":
        ctx = downsample(context) if context is not None else None
        return base_target(event), {"cond": base_cond(ctx, has_context)}
    if stage == "tsr":
        low, aug_t = augment(base_target(event), generator=generator)
        return downsample(event), {"cond": tsr_cond(low), "aug_t": aug_t}
    low, aug_t = augment(downsample(event), generator=generator)
    return event, {"cond": ssr_cond(low), "aug_t": aug_t}


@dataclass
class ImagenVideoData:
    """Training batches of one stage: `batch(i)` is a DiffusionBatch (x0 = the stage's clip,
    cond = conditioning channels, aug level, text tokens / mask / pooled).

    On a GPU it is made in two halves: `examples(i)` (CPU work for the trainer's data workers)
    and `encode_text(examples)` on the training device, where the text encoder takes
    milliseconds instead of more of a worker's time than rendering the clips."""

    stage: str
    text_encoder: TextEncoder
    diffusion: GaussianDiffusion
    batch_size: int = 8
    seed: int = 0
    rank: int = 0
    story_share: float = 0.3  # share of examples that are a story's step (context = previous last frame)
    max_story: int = 6
    scene_mix: dict[str, float] | None = None  # weights of the single-scene kinds (kinema.data.shapes.parse_scene_mix)
    source: Any = None  # a real captioned-video dataset (kinema.data.load_dataset); None = the Shapes world
    negatives: str | None = None  # a DIRECTION_NEGATIVES key: give each caption with a one-way motion that hard negative (Shapes world only)

    def __post_init__(self):
        check_stage(self.stage)
        self.augment = NoiseAugmentation(self.diffusion)

    def batch(self, index: int) -> DiffusionBatch:
        return self.encode_text(self.examples(index))

    @torch.no_grad()
    def examples(self, index: int) -> DiffusionBatch:
        """Batch `index` with its captions not yet encoded."""
        rng = np.random.default_rng([self.seed, self.rank, index])
        if self.source is not None:  # real footage: single clips, no story context
            real = self.source.batch(index)
            events, captions = real.video, real.captions
            has_context = torch.zeros(len(captions), dtype=torch.bool)
            context = events[:, :, -1:]
        else:
            examples = [captioned_example(rng, self.story_share, self.max_story, self.scene_mix) for _ in range(self.batch_size)]
            events = to_model_range(np.stack([e for e, _, _ in examples]))
            captions = [c for _, _, c in examples]
            has_context = torch.tensor([c is not None for _, c, _ in examples])
            context = to_model_range(np.stack([c if c is not None else e[-1:] for e, c, _ in examples]))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x0, cond = stage_inputs(self.stage, events, context, has_context, self.augment, generator)
        negatives = [DIRECTION_NEGATIVES[self.negatives](c, rng) for c in captions] if self.negatives else None
        return DiffusionBatch(x0, cond, list(captions), negatives)

    @torch.no_grad()
    def encode_text(self, batch: DiffusionBatch) -> DiffusionBatch:
        """`batch` with its captions encoded into cond, where the batch is."""
        device = batch.x0.device
        text = self.text_encoder.to(device).encode(batch.captions, device=device)
        tokens, mask = trim_padding(text.tokens, text.mask)
        negative = None
        if batch.negatives is not None:  # a row without a negative carries its own caption (CaptionNegatives)
            wrong = self.text_encoder.encode([n or c for n, c in zip(batch.negatives, batch.captions)], device=device)
            rows = torch.tensor([n is not None for n in batch.negatives], device=device)
            negative = CaptionNegatives(rows, *trim_padding(wrong.tokens, wrong.mask), wrong.pooled)
        return DiffusionBatch(batch.x0, {**batch.cond, "text": tokens, "text_mask": mask, "text_pooled": text.pooled}, negative=negative)
