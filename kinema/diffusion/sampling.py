"""Sampling through diffusers' schedulers: DDPM, DDIM, DPM-Solver++.

A scheduler is built from a `GaussianDiffusion`'s betas and parameterisation, so what the
network learned (v or ε on the same ᾱ_t) is exactly what the scheduler assumes. Timesteps
are spaced "trailing": the first step starts at t = T-1 (pure noise, as in training) and
every power-of-two step count lands on the grid progressive distillation trains on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .gaussian import GaussianDiffusion, classifier_free_guidance

# name -> diffusers scheduler class; diffusers is imported only when one is made (it is slow to import)
SCHEDULERS: dict[str, str] = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler"}


def make_scheduler(name: str, diffusion: GaussianDiffusion | None = None, *, thresholding: bool = False):
    """A diffusers scheduler for `diffusion`'s schedule. `thresholding` is diffusers' dynamic
    thresholding of the predicted x0 with a sample_max_value of 1, which makes Imagen's rule
    a plain clip to [-1, 1]. It suits DPM-Solver++ (which steps from x0 alone); under DDIM,
    which keeps the unclipped ε, it wrecks a guided sample."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    diffusion = diffusion or GaussianDiffusion()
    kwargs: dict[str, Any] = {**diffusion.scheduler_config(), "timestep_spacing": "trailing"}
    if name in ("ddpm", "ddim"):
        kwargs["clip_sample"] = False
    if name == "ddim":
        kwargs["set_alpha_to_one"] = True  # the last step lands on clean data
    if name == "dpm++":
        kwargs.update(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    if thresholding:
        kwargs.update(thresholding=True, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)
    import diffusers

    return getattr(diffusers, SCHEDULERS[name])(**kwargs)


@torch.no_grad()
def sample(
    model_fn: Callable[..., torch.Tensor],
    shape: tuple[int, ...],
    scheduler_name: str = "ddim",
    steps: int = 32,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int], None] | None = None,
    *,
    cond: dict[str, Any] | None = None,
    diffusion: GaussianDiffusion | None = None,
    thresholding: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw samples x0 of `shape` from `model_fn(z_t, t, **cond)` in `steps` scheduler steps.

    `guidance` > 1 applies classifier-free guidance (conditional and unconditional rows in
    one batch, see `classifier_free_guidance`). `callback(i, steps)` runs after step i.
    The noise comes from `generator`, so a seed gives the same samples every time."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    diffusion = diffusion or GaussianDiffusion()
    scheduler = make_scheduler(scheduler_name, diffusion, thresholding=thresholding)
    scheduler.set_timesteps(steps, device=device)
    z = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        tb = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        out = classifier_free_guidance(model_fn, scheduler.scale_model_input(z, t), tb, cond, guidance).float()
        z = scheduler.step(out, t, z, generator=generator, return_dict=False)[0]  # DDIM: eta = 0, deterministic
        if callback is not None:
            callback(i + 1, len(scheduler.timesteps))
    return z
