"""2-D convolutional blocks for encoders, decoders and U-Nets.

They take images [B, C, H, W]; a video is folded to frames first
(`rearrange(x, 'b c t h w -> (b t) c h w')`), so image and video models share weights and a
per-frame stack is causal in time for free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm_groups(channels: int, preferred: int = 32) -> int:
    g = min(preferred, channels)
    while channels % g:
        g -= 1
    return g


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel, with GroupNorm's parameters. Unlike GroupNorm,
    whose statistics span the whole image, it keeps a conv stack local: a pixel's features
    depend only on its receptive field, not on what the rest of the frame holds."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.movedim(1, -1), x.shape[1:2], self.weight, self.bias, self.eps).movedim(-1, 1)


def make_norm(kind: str, channels: int, groups: int = 32) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(norm_groups(channels, groups), channels)
    if kind == "channel":
        return ChannelNorm(channels)
    raise ValueError(f"unknown norm {kind!r}: 'group' or 'channel'")


class ResnetBlock2d(nn.Module):
    """Norm -> SiLU -> 3x3 conv, twice, plus a (1x1 when widths differ) shortcut. The second
    conv starts at zero so a fresh block is the identity and deep stacks train from step one.
    `norm`: 'group' (GroupNorm, image-wide statistics) or 'channel' (per pixel: local)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, *, groups: int = 32, norm: str = "group"):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = make_norm(norm, in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(norm, out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Downsample2d(nn.Module):
    """Halve height and width with a stride-2 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels or in_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2d(nn.Module):
    """Double height and width: nearest-neighbour then a 3x3 conv (no checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels or in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
