"""A small 3-D CNN's parts, for models that read a whole clip at once and say one thing about
it (kinema's FVD-shapes classifier, the video-text matcher): they need the motion, so the
first stages keep every frame, and they need small objects, so space-time is pooled twice."""

from __future__ import annotations

import torch
from torch import nn


def conv3d_stage(cin: int, cout: int, stride: tuple[int, int, int], groups: int) -> list[nn.Module]:
    """Conv3d 3x3x3 -> GroupNorm -> GELU, as a list to unpack into an `nn.Sequential` (so a
    model's parameter names are those of its own Sequential)."""
    return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(groups, cout), nn.GELU()]


def mean_max_pool(h: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, 2C]: the mean over space-time says how much, the max whether at
    all (a small object is a few percent of the frame; averaging alone drowns it)."""
    h = h.flatten(2)
    return torch.cat([h.mean(-1), h.amax(-1)], dim=-1)
