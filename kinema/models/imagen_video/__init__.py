"""Imagen Video (Ho et al., 2022): a cascade of text-conditioned video diffusion models —
base, temporal super-resolution, spatial super-resolution — with v-prediction,
classifier-free guidance, noise-conditioning augmentation and progressive distillation.
The shared parts live in `kinema.diffusion` and `kinema.nn.unet`; this folder holds only
the cascade's stages, data and pipeline."""

from ...checkpoint import register
from ...nn.unet import VideoUNet, VideoUNetConfig

register("VideoUNet", VideoUNet, VideoUNetConfig)

__all__ = ["VideoUNet", "VideoUNetConfig"]
