"""Per-pixel loss weights that put small objects on an equal footing with the backdrop.

A Shapes-world object covers 2-10 % of a 64x64 frame. With every pixel weighted alike,
nearly all of a reconstruction or denoising loss is the flat background, and a model
learns the backdrop long before the things in it: a tokenizer trained that way drew
drifting-colour blobs that the judge read as missing objects (7 % pass after an hour),
and the same fine-tune with objects weighted up passed 52 % half an hour later. The
foreground is what differs from its frame's dominant (median) colour, plus a pixel of rim,
so the rule needs no labels and means the same on real footage: what is not backdrop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

FOREGROUND_THRESHOLD = 0.1  # in [-1, 1] units summed over RGB: ~13/255 per channel on average
# A model's estimate of a clip is blurry where it is unsure (a diffusion model's x0 at high
# noise): at 0.1 the shipped Imagen Video base's x0 marked 36-99 % of pixels at t >= 200 of
# 1,024. At 0.5 it marks what it draws: 0-2 % of pixels beyond the true objects up to t = 800.
PREDICTED_FOREGROUND_THRESHOLD = 0.5


def foreground_mask(target: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD, rim: bool = True) -> torch.Tensor:
    """1 where a pixel (or, with `rim`, a neighbour of it) is far from its frame's median
    colour, else 0. target: [B, C, T, H, W] or [B, C, H, W] -> mask [B, 1, T, H, W] / [B, 1, H, W]."""
    video = target.ndim == 5
    frames = rearrange(target, "b c t h w -> (b t) c h w") if video else target
    median = frames.flatten(2).median(dim=-1).values[..., None, None]
    far = ((frames - median).abs().sum(dim=1, keepdim=True) > threshold).float()
    if rim:  # include the edge pixels just outside
        far = F.max_pool2d(far, 3, stride=1, padding=1)
    return rearrange(far, "(b t) c h w -> b c t h w", b=target.shape[0]) if video else far


def foreground_weights(target: torch.Tensor, weight: float, prediction: torch.Tensor | None = None) -> torch.Tensor | None:
    """1 + `weight` on the foreground of `target` (None when `weight` is 0: plain means).

    Weighting the target's foreground alone makes an object drawn where the target has
    backdrop `1 + weight` times cheaper than one left out, so a model learns to hedge with
    extra objects. Given the model's own `prediction` (of the target), its foreground is
    weighted up too: a false object then costs as much as a missing one."""
    if not weight:
        return None
    mask = foreground_mask(target.float())
    if prediction is not None:
        mask = torch.maximum(mask, foreground_mask(prediction.detach().float(), PREDICTED_FOREGROUND_THRESHOLD))
    return 1 + weight * mask


def weighted_mean(error: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of `error` under per-pixel `weight` (broadcast over channels); plain mean if None."""
    if weight is None:
        return error.mean()
    weight = weight.expand_as(error)
    return (error * weight).sum() / weight.sum()


def row_means(error: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """`weighted_mean` of each row (the first dimension) of `error` on its own: [B]."""
    if weight is None:
        return error.flatten(1).mean(1)
    weight = weight.expand_as(error)
    return (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1)
