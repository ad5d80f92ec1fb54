"""Progressive distillation (Salimans & Ho, 2022): a student that takes one DDIM step where
its teacher took two, round after round (64 → 32 → 16 → 8 steps).

The student starts as a copy of the teacher. For a clean sample x and a point z_t on the
student's grid, the frozen teacher takes two deterministic DDIM steps t → t - Δ/2 → t - Δ;
the student is trained so that its *single* DDIM step t → t - Δ lands on the same point.
That fixes the x0 the student must predict,

    x̃ = (z'' - (σ''/σ_t) z_t) / (α'' - (σ''/σ_t) α_t),

which is turned into the student's v-target. `distillation_loss` returns a closure the
one Trainer accepts as `loss_fn(student, batch)`. Its `foreground_weight` can weight small
objects up as the teacher's own training did: a plain mean hides that nearly all of the
student's error is on the objects (on imagen-video-shapes it did not bring the student
closer to its teacher, so it is off by default).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.weighting import foreground_weights, weighted_mean
from .gaussian import DiffusionBatch, GaussianDiffusion, classifier_free_guidance


def step_grid(steps: int, diffusion: GaussianDiffusion) -> torch.Tensor:
    """The `steps` timesteps a `steps`-step DDIM sampler visits (diffusers' "trailing"
    spacing): T-1, T-1-Δ, …, with Δ = T // steps."""
    T = diffusion.num_train_timesteps
    if steps < 1 or T % steps:
        raise ValueError(f"distillation needs a step count that divides {T} (a power of two), got {steps}")
    return torch.arange(T - 1, -1, -(T // steps))


def halving_schedule(teacher_steps: int, student_steps: int) -> list[int]:
    """Student step counts of each round: 64, 8 -> [32, 16, 8]."""
    if student_steps < 1 or teacher_steps <= student_steps or teacher_steps % student_steps or (teacher_steps // student_steps) & (teacher_steps // student_steps - 1):
        raise ValueError(f"teacher steps {teacher_steps} must be student steps {student_steps} times a power of two")
    rounds, n = [], teacher_steps
    while n > student_steps:
        n //= 2
        rounds.append(n)
    return rounds


def make_student(teacher: nn.Module) -> nn.Module:
    """A trainable copy of the teacher (the student starts where the teacher is)."""
    student = copy.deepcopy(teacher).float().train()
    student.requires_grad_(True)
    return student


@torch.no_grad()
def teacher_two_steps(teacher: nn.Module, diffusion: GaussianDiffusion, z: torch.Tensor, t: torch.Tensor, delta: int, cond: dict[str, Any], guidance: float = 1.0) -> torch.Tensor:
    """The teacher's two DDIM steps t → t - Δ/2 → t - Δ (a negative timestep is clean data)."""
    if delta < 2:
        raise ValueError(f"a student step of {delta} timestep cannot be two teacher steps: distil to at most half the training timesteps")
    t_mid = t - delta // 2
    out = classifier_free_guidance(teacher, z, t, cond, guidance).float()
    z_mid = diffusion.ddim_step(z, out, t, t_mid)
    out = classifier_free_guidance(teacher, z_mid, t_mid, cond, guidance).float()
    return diffusion.ddim_step(z_mid, out, t_mid, t - delta)


@torch.no_grad()
def distillation_target(teacher: nn.Module, diffusion: GaussianDiffusion, z: torch.Tensor, t: torch.Tensor, delta: int, cond: dict[str, Any], guidance: float = 1.0) -> torch.Tensor:
    """The v a student must predict at (z, t) so that its one DDIM step t → t - Δ lands
    where the teacher's two steps do."""
    z_target = teacher_two_steps(teacher, diffusion, z, t, delta, cond, guidance)
    alpha, sigma = diffusion.alpha_sigma(t, z)
    alpha2, sigma2 = diffusion.alpha_sigma(t - delta, z)
    ratio = sigma2 / sigma
    x_target = (z_target - ratio * z) / (alpha2 - ratio * alpha)
    return diffusion.v_target(x_target, diffusion.eps_from_x0(z, x_target, t), t)


def distillation_loss(
    teacher: nn.Module,
    diffusion: GaussianDiffusion,
    student_steps: int,
    *,
    teacher_guidance: float = 1.0,
    foreground_weight: float = 0.0,
    generator: torch.Generator | None = None,
) -> Callable[[nn.Module, DiffusionBatch], dict[str, torch.Tensor]]:
    """A `loss_fn(student, batch)` for the Trainer: the student, which will sample in
    `student_steps` DDIM steps, learns one step of it from two of the frozen teacher.

    `teacher_guidance` > 1 distils a classifier-free-guided teacher (the first round), so
    the student bakes the guidance in and later samples with one pass per step.
    `foreground_weight` > 0 weights the pixels where x0 is not backdrop that much more, as
    `GaussianDiffusion.loss` does (give it the teacher's value)."""
    if diffusion.prediction_type != "v_prediction":
        raise ValueError("progressive distillation here targets v-prediction models (Salimans & Ho's choice)")
    teacher = teacher.eval().requires_grad_(False)
    grid = step_grid(student_steps, diffusion)
    delta = diffusion.num_train_timesteps // student_steps

    def loss_fn(student: nn.Module, batch: DiffusionBatch) -> dict[str, torch.Tensor]:
        x0, cond = batch.x0, dict(batch.cond)
        B = x0.shape[0]
        t = grid.to(x0.device)[torch.randint(0, len(grid), (B,), generator=generator, device=x0.device)]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        z = diffusion.q_sample(x0, t, noise)
        v_target = distillation_target(teacher, diffusion, z, t, delta, cond, teacher_guidance)
        error = (student(z, t, **cond).float() - v_target) ** 2
        return {"loss": weighted_mean(error, foreground_weights(x0, foreground_weight))}

    return loss_fn


@torch.no_grad()
def one_step_error(student: nn.Module, teacher: nn.Module, diffusion: GaussianDiffusion, batch: DiffusionBatch, student_steps: int, *, teacher_guidance: float = 1.0, seed: int = 0) -> float:
    """Mean squared distance between the student's one DDIM step and the teacher's two,
    over every point of the student's grid: how well a round of distillation has worked."""
    g = torch.Generator(batch.x0.device).manual_seed(seed)
    delta = diffusion.num_train_timesteps // student_steps
    errors = []
    for t0 in step_grid(student_steps, diffusion).tolist():
        t = torch.full((batch.x0.shape[0],), t0, device=batch.x0.device, dtype=torch.long)
        z = diffusion.q_sample(batch.x0, t, torch.randn(batch.x0.shape, generator=g, device=batch.x0.device))
        target = teacher_two_steps(teacher, diffusion, z, t, delta, batch.cond, teacher_guidance)
        mine = diffusion.ddim_step(z, student(z, t, **batch.cond).float(), t, t - delta)
        errors.append(float(F.mse_loss(mine, target)))
    return sum(errors) / len(errors)
