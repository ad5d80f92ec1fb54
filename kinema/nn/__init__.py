"""Building blocks shared by kinema's models: attention, transformer blocks, conv blocks, embeddings."""

from .attention import Attention, block_causal_mask
from .embeddings import sinusoidal_embedding
from .resnet import Downsample2d, ResnetBlock2d, Upsample2d
from .transformer import FeedForward, Transformer, TransformerBlock

__all__ = [
    "Attention",
    "Downsample2d",
    "FeedForward",
    "ResnetBlock2d",
    "Transformer",
    "TransformerBlock",
    "Upsample2d",
    "block_causal_mask",
    "sinusoidal_embedding",
]
