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
    a plain clip to [-1, 1]; DDPM and DPM-Solver++ apply it, DDIM never does."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    diffusion = diffusion or GaussianDiffusion()
    kwargs: dict[str, Any] = {**diffusion.scheduler_config(), "timestep_spacing": "trailing"}
    if name in ("ddpm", "ddim"):
        kwargs["clip_sample"] = False
    if name == "dpm++":
        kwargs.update(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    # DDIM re-noises with the unclipped ε (diffusers, unless use_clipped_model_output), so a
    # clipped x0 no longer adds up to z_t and a guided sample falls apart (0/30 judged passes
    # against 15/30 unclipped); DDPM's posterior and DPM-Solver++ step from the clipped x0.
    if thresholding and name != "ddim":
        kwargs.update(thresholding=True, sample_max_value=1.0)
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
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Draw samples x0 of `shape` from `model_fn(z_t, t, **cond)` in `steps` scheduler steps.

    `guidance` > 1 applies classifier-free guidance (conditional and unconditional rows in
    one batch, see `classifier_free_guidance`). `callback(i, steps)` runs after step i.
    `known` (x0, where), each broadcastable to `shape`: values of the sample known in advance
    (a story event's first frame, the film's last), held through sampling by the replacement
    method (Ho et al. 2022, Video Diffusion Models): after each step, `where` they are x0
    noised to the next step's level, and x0 itself at the end.
    The noise comes from `generator`, so a seed gives the same samples every time."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    diffusion = diffusion or GaussianDiffusion()
    T = diffusion.num_train_timesteps
    if scheduler_name == "ddim" and T % steps:  # diffusers' DDIM steps to t - T // steps, off its own grid otherwise
        raise ValueError(f"ddim needs a step count that divides {T}: one of {', '.join(str(n) for n in range(1, T + 1) if T % n == 0)}; got {steps}")
    scheduler = make_scheduler(scheduler_name, diffusion, thresholding=thresholding)
    scheduler.set_timesteps(steps, device=device)
    z = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        tb = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        out = classifier_free_guidance(model_fn, scheduler.scale_model_input(z, t), tb, cond, guidance).float()
        z = scheduler.step(out, t, z, generator=generator, return_dict=False)[0]  # DDIM: eta = 0, deterministic
        if known is not None:
            x0, where = known
            if i + 1 < len(scheduler.timesteps):
                t_next = torch.full((shape[0],), int(scheduler.timesteps[i + 1]), device=device, dtype=torch.long)
                x0 = diffusion.q_sample(x0, t_next, torch.randn(shape, generator=generator, device=device))
            z = torch.where(where, x0, z)
        if callback is not None:
            callback(i + 1, len(scheduler.timesteps))
    return z
