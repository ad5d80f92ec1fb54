"""A grounding loss on cross-attention: a word that names an object is attended from that
object's tokens (TokenCompose, Wang et al. 2024, its token loss).

Cross-attention lets every video token read every word. A small model can learn to draw "a
red circle and a blue square" by reading "circle" and "square" from both objects' tokens:
then each object gets a shape between the two (on the Shapes world, Phenaki's MaskGIT drew a
triangle next to a circle with a circle's fill ratio). Telling the model, per word, where on
the frame the word is to be read from asks for the binding without changing the
architecture or what is done at sampling time. It is not a cure yet: on phenaki-shapes the
loss fell from 0.70 to 0.16 in 296 steps while an object's tokens went on reading both
shape words alike (the README's training section and the card's HISTORY.md have the numbers).
"""

from __future__ import annotations

import torch
from einops import einsum


def grounding_loss(weights: list[torch.Tensor], object_tokens: torch.Tensor, object_words: torch.Tensor) -> torch.Tensor:
    """Mean over layers and object words of (1 - the share of the word's attention that comes
    from its object's tokens)^2.

    weights: per layer, cross-attention probabilities [B, heads, N, L] (N video tokens
    attending to L words; heads are averaged, as TokenCompose averages them);
    object_tokens [B, K, N] bool: object k covers token n; object_words [B, K, L] bool: word
    l describes object k. Objects with no tokens or no words add nothing."""
    maps = torch.stack([w.float().mean(1) for w in weights])  # [layers, B, N, L]
    inside = einsum(maps, object_tokens.float(), "l b n w, b k n -> l b k w")
    share = inside / maps.sum(2)[:, :, None].clamp_min(1e-6)
    valid = object_words & object_tokens.any(-1, keepdim=True)  # [B, K, L]
    if not valid.any():
        return maps.sum() * 0.0  # keeps the graph whole on batches with nothing to ground
    return (1 - share[:, valid]).square().mean()
