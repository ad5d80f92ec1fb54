"""Reconstruction losses for tokenizers of flat-coloured worlds.

L1 keeps flat colours flat (MSE settles for grey blurs); the gradient term compares the
horizontal, vertical and temporal differences of output and target, which penalises a soft
edge as much as a misplaced one: the judge reads corners and apexes from the edge pixels.

Objects are small: a shape covers 2-10 % of a 64x64 frame, so with every pixel weighted
alike nearly all of the loss is the background, and a tokenizer learns the backdrop long
before the things in it (blobs of a drifting colour, which the judge reads as missing).
`foreground` weights up the pixels that differ from their frame's dominant (median) colour,
and a pixel around them, so objects and their edges carry a fixed share of the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

FOREGROUND_THRESHOLD = 0.1  # in [-1, 1] units summed over RGB: ~13/255 per channel on average


def foreground_mask(target: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """1 where a pixel (or a neighbour of it) is far from its frame's median colour, else 0.
    target: [B, C, T, H, W] or [B, C, H, W] -> mask [B, 1, T, H, W] / [B, 1, H, W]."""
    video = target.ndim == 5
    frames = rearrange(target, "b c t h w -> (b t) c h w") if video else target
    median = frames.flatten(2).median(dim=-1).values[..., None, None]
    far = ((frames - median).abs().sum(dim=1, keepdim=True) > threshold).float()
    far = F.max_pool2d(far, 3, stride=1, padding=1)  # include the edge pixels just outside
    return rearrange(far, "(b t) c h w -> b c t h w", b=target.shape[0]) if video else far


def _weighted_mean(error: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return error.mean()
    weight = weight.expand_as(error)
    return (error * weight).sum() / weight.sum()


def gradient_l1(recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 between finite differences along width, height (and time for 5-D video),
    each difference weighted by the larger weight of its two pixels."""
    dims = (-1, -2, -3) if recon.ndim == 5 else (-1, -2)
    total = recon.new_zeros(())
    for d in dims:
        n = recon.shape[d] - 1
        w = None if weight is None else torch.maximum(weight.narrow(d, 0, n), weight.narrow(d, 1, n))
        total = total + _weighted_mean((torch.diff(recon, dim=d) - torch.diff(target, dim=d)).abs(), w)
    return total / len(dims)


class ReconstructionLoss(nn.Module):
    def __init__(self, *, l1: float = 1.0, mse: float = 0.0, gradient: float = 1.0, foreground: float = 0.0):
        super().__init__()
        self.l1, self.mse, self.gradient, self.foreground = l1, mse, gradient, foreground

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        weight = 1 + self.foreground * foreground_mask(target) if self.foreground else None
        terms = {"l1": _weighted_mean((recon - target).abs(), weight), "mse": F.mse_loss(recon, target)}
        if self.gradient:
            terms["grad"] = gradient_l1(recon, target, weight)
        loss = self.l1 * terms["l1"] + self.mse * terms["mse"] + self.gradient * terms.get("grad", 0.0)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
