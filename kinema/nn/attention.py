"""Multi-head attention over token sequences: self or cross, with an optional mask.

One module serves every model: spatial attention (tokens of one frame), temporal attention
(one place across frames), causal-in-time attention (C-ViViT), and cross-attention to text
(MaskGIT, U-Nets). The kernel is `scaled_dot_product_attention`, which picks flash /
memory-efficient paths on CUDA and a fused path on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def trim_padding(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the text padding the whole batch shares: cross-attention's cost follows its length."""
    length = max(1, int(mask.sum(1).max()))
    return tokens[:, :length], mask[:, :length]


def block_causal_mask(frames: int, tokens_per_frame: int, device: torch.device | None = None) -> torch.Tensor:
    """A boolean [N, N] mask (True = may attend) for N = frames * tokens_per_frame tokens laid
    out frame-major: every token sees all tokens of its own frame and of earlier frames, none
    of later frames. This is C-ViViT's causality: early tokens never depend on the future."""
    frame = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[:, None] >= frame[None, :]


class Attention(nn.Module):
    """Multi-head attention. `context=None` is self-attention; a `context` [B, M, context_dim]
    gives cross-attention. `mask` is boolean, True where a query may attend to a key, and
    broadcasts to [B, heads, N, M] ([N, M] and [B, 1, N, M] both work)."""

    def __init__(self, dim: int, *, heads: int = 8, dim_head: int = 64, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """With a `weights` list, the attention probabilities [B, heads, N, M] are appended to
        it (computed explicitly, not by the fused kernel), e.g. for a loss on where a word is
        attended from; without one the fused kernel runs."""
        context = x if context is None else context
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        if weights is None:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            weights.append(probs)
            out = F.dropout(probs, self.dropout, self.training) @ v
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))
