"""Diffusion shared by every diffusion family: schedules, ε/v objectives, classifier-free
guidance, noise-conditioning augmentation, sampling with diffusers' schedulers, and
progressive distillation."""

from .distill import distillation_loss, distillation_target, halving_schedule, make_student, one_step_error, step_grid
from .gaussian import (
    CaptionNegatives,
    DiffusionBatch,
    GaussianDiffusion,
    NoiseAugmentation,
    classifier_free_guidance,
    cosine_alphas_cumprod,
    drop_mask,
    linear_alphas_cumprod,
)
from .sampling import SCHEDULERS, make_scheduler, sample

__all__ = [
    "SCHEDULERS",
    "CaptionNegatives",
    "DiffusionBatch",
    "GaussianDiffusion",
    "NoiseAugmentation",
    "classifier_free_guidance",
    "cosine_alphas_cumprod",
    "distillation_loss",
    "distillation_target",
    "drop_mask",
    "halving_schedule",
    "linear_alphas_cumprod",
    "make_scheduler",
    "make_student",
    "one_step_error",
    "sample",
    "step_grid",
]
