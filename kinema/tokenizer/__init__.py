"""Video tokenizers: C-ViViT (Phenaki's causal tokenizer) with an FSQ quantizer."""

from .cvivit import CViViT, CViViTConfig

__all__ = ["CViViT", "CViViTConfig"]
