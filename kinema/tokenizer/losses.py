"""Reconstruction losses for tokenizers of flat-coloured worlds.

L1 keeps flat colours flat (MSE settles for grey blurs); the gradient term compares the
horizontal, vertical and temporal differences of output and target, which penalises a soft
edge as much as a misplaced one: the judge reads corners and apexes from the edge pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gradient_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 between finite differences along width, height (and time for 5-D video)."""
    dims = (-1, -2, -3) if recon.ndim == 5 else (-1, -2)
    total = recon.new_zeros(())
    for d in dims:
        total = total + F.l1_loss(torch.diff(recon, dim=d), torch.diff(target, dim=d))
    return total / len(dims)


class ReconstructionLoss(nn.Module):
    def __init__(self, *, l1: float = 1.0, mse: float = 0.0, gradient: float = 1.0):
        super().__init__()
        self.l1, self.mse, self.gradient = l1, mse, gradient

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"l1": F.l1_loss(recon, target), "mse": F.mse_loss(recon, target)}
        if self.gradient:
            terms["grad"] = gradient_l1(recon, target)
        loss = self.l1 * terms["l1"] + self.mse * terms["mse"] + self.gradient * terms.get("grad", 0.0)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
