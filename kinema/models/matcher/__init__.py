"""A video-text matcher that picks the best of a generator's samples, as DALL-E (Ramesh et
al., 2021) reranked its samples with CLIP.

A small video diffusion model's sample is decided by its starting noise more than by its
caption (`kinema.diffusion.rerank`), so drawing several and keeping one pays, if something
can tell which fits the caption. The generator's own denoising error is one judge, but its
loss barely cares which way an object moves (the imagen-video-shapes card, "Which way"). A
discriminative model trained to tell a clip's caption from the same caption with one thing
changed (the way, the shape, the colour, ...) learns exactly those differences. It reads
the same frozen text encoder as the generators, and only train captions.
"""

from ...checkpoint import register
from .model import VideoTextMatcher, VideoTextMatcherConfig

register("VideoTextMatcher", VideoTextMatcher, VideoTextMatcherConfig)

__all__ = ["VideoTextMatcher", "VideoTextMatcherConfig"]
