"""Phenaki (Villegas et al., 2022): C-ViViT tokens + a text-conditioned MaskGIT; stories
continue from the last frame of the film so far."""

from ...checkpoint import register
from .maskgit import MaskGit, MaskGitConfig

register("MaskGit", MaskGit, MaskGitConfig)

__all__ = ["MaskGit", "MaskGitConfig"]
