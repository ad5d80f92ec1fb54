"""Best of K samples, judged by the diffusion model itself.

A small video diffusion model's sample is decided early: on the Shapes world the path an
object takes is set by the starting noise more than by the caption (the same seed sends it
the same wrong way under two different models and samplers; the imagen-video-shapes card,
"Where a path is decided"). Drawing K samples and keeping one is then worth more than
sharper training, if something can tell which to keep. The model can: its denoising error
on a sample, under the caption, at a few noise levels, is a Monte Carlo estimate of the
weighted ELBO (Kingma et al. 2021), the same quantity a diffusion model classifies with
(Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier"). The sample it
denoises best is the one it finds likeliest under the caption. Every sample is scored with
the same noise at the same levels, so the noise's own difficulty cancels out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .gaussian import GaussianDiffusion

# Noise levels (of 1,024) and draws per level at which a sample is scored. Measured on
# imagen-video-shapes' base (40 one-object prompts that move, 6 candidates each; ~/kinema-runs/s39):
# the sample denoised best passed the judge over the others 74 % of the time at t in
# {400, 600, 800} x 2 draws, 70-74 % with more levels or draws, 68 % at t = 800 alone.
RERANK_TIMESTEPS = (400, 600, 800)
RERANK_DRAWS = 2


@torch.no_grad()
def denoising_error(
    model: Callable[..., torch.Tensor],
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    cond: dict[str, Any],
    generator: torch.Generator | None = None,
    timesteps: Sequence[int] = RERANK_TIMESTEPS,
    draws: int = RERANK_DRAWS,
) -> torch.Tensor:
    """Mean squared error [K] of `model`'s prediction for each sample of `x0` [K, ...] under
    `cond` (one row per sample), each level and draw with one noise shared by every sample."""
    K = x0.shape[0]
    error = torch.zeros(K, device=x0.device)
    for level in timesteps:
        t = torch.full((K,), level, device=x0.device, dtype=torch.long)
        for _ in range(draws):
            noise = torch.randn(x0.shape[1:], generator=generator, device=x0.device).expand_as(x0)
            out = model(diffusion.q_sample(x0, t, noise), t, **cond).float()
            error += (out - diffusion.target(x0, noise, t)).pow(2).flatten(1).mean(1)
    return error / (len(timesteps) * draws)


def likeliest(
    model: Callable[..., torch.Tensor],
    diffusion: GaussianDiffusion,
    samples: torch.Tensor,
    cond: dict[str, Any],
    generator: torch.Generator | None = None,
    negatives: Sequence[dict[str, Any]] = (),
    contrast: float = 0.0,
) -> torch.Tensor:
    """The one of `samples` [K, ...] that `model` denoises best under `cond` (rows of 1 or K),
    kept as a batch of one.

    With `negatives` (`cond` under captions the samples should *not* fit, rows as `cond`'s)
    and `contrast` c, the kept sample is the one with the least e + c (e - min_n e_n): e its
    error under `cond`, e_n under each negative, every caption scored with the same noise. A
    base that draws an object moving along the right axis either way is, as a scorer, as
    blind to the way as it is as a drawer (the imagen-video-shapes card, "Which way"); a
    scorer taught the way still finds a caption's likeliest sample mostly by its drawing, and
    the margin over the caption sent each wrong way is what reads the way itself. `generator`
    leaves as it would without negatives, so the rest of a cascade draws the same noise."""
    K = samples.shape[0]

    def rows(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v.expand(K, *v.shape[1:]) if torch.is_tensor(v) and v.ndim and v.shape[0] == 1 else v for k, v in c.items()}

    if negatives and contrast and generator is None:  # the same noise for every caption needs a stream of its own
        generator = torch.Generator(samples.device).manual_seed(int(torch.randint(2**62, ())))
    start = generator.get_state() if negatives and contrast else None
    score = denoising_error(model, diffusion, samples, rows(cond), generator)
    if start is not None:
        after = generator.get_state()
        wrong = []
        for negative in negatives:
            generator.set_state(start)
            wrong.append(denoising_error(model, diffusion, samples, rows(negative), generator))
        generator.set_state(after)
        score = score + contrast * (score - torch.stack(wrong).min(0).values)
    best = int(score.argmin())
    return samples[best : best + 1]


def agreed(*scores: torch.Tensor) -> torch.Tensor:
    """One score [K] for K candidates from several scorers' [K] (higher is better), each
    standardised over the candidates first, so scorers on different scales count alike: the
    sum of how far each puts a candidate above the candidates' mean, in its own spread."""
    return sum((s - s.mean()) / s.std().clamp(min=1e-12) for s in (x.float() for x in scores))
