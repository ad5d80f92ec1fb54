"""Pre-norm transformer blocks: self-attention, optional cross-attention, feed-forward."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention


class FeedForward(nn.Module):
    """Two linear layers with a GELU between, widening by `mult`."""

    def __init__(self, dim: int, *, mult: float = 4.0, dropout: float = 0.0):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """x + SelfAttn(LN x) [+ CrossAttn(LN x, context)] + FF(LN x)."""

    def __init__(self, dim: int, *, heads: int = 8, dim_head: int = 64, ff_mult: float = 4.0, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads=heads, dim_head=dim_head, dropout=dropout)
        self.norm_cross = nn.LayerNorm(dim) if context_dim else None
        self.cross = Attention(dim, heads=heads, dim_head=dim_head, context_dim=context_dim, dropout=dropout) if context_dim else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mult=ff_mult, dropout=dropout)

    def forward(
        self, x: torch.Tensor, *, mask: torch.Tensor | None = None, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
        cross_weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`cross_weights`, a list, collects the cross-attention probabilities (`Attention`)."""
        x = x + self.attn(self.norm_attn(x), mask=mask)
        if self.cross is not None:
            if context is None:
                raise ValueError("this transformer block was built with cross-attention: pass context=")
            x = x + self.cross(self.norm_cross(x), context=context, mask=context_mask, weights=cross_weights)
        return x + self.ff(self.norm_ff(x))

    @torch.no_grad()
    def zero_residuals(self) -> None:
        """Zero the output projection of every residual branch, so the block passes its input
        through unchanged: added on top of a trained stack it computes exactly what the stack
        did, and it learns from there (its projections still get gradients)."""
        for out in (self.attn.to_out, self.ff.net[-1], *([self.cross.to_out] if self.cross is not None else [])):
            out.weight.zero_()
            out.bias.zero_()


class Transformer(nn.Module):
    """A stack of `TransformerBlock`s and a final LayerNorm."""

    def __init__(self, dim: int, depth: int, **block_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList([TransformerBlock(dim, **block_kwargs) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, **kwargs)
        return self.norm(x)
