"""Gaussian diffusion: noise schedules, the forward process, ε / v / x0 conversions, the
training objective, classifier-free guidance and noise-conditioning augmentation.

It is written for any diffusion family (Imagen Video's cascade uses it). Time is the
discrete timestep t ∈ {0, …, T-1} of diffusers' schedulers, and the schedules below are
bit-for-bit diffusers' `squaredcos_cap_v2` and `linear` betas, so a model trained here is
sampled by diffusers' DDPM / DDIM / DPM-Solver++ (see `sampling.py`) with no conversion.

Notation (Salimans & Ho 2022): z_t = α_t x0 + σ_t ε with α_t² = ᾱ_t, σ_t² = 1 - ᾱ_t;
the velocity v = α_t ε - σ_t x0. Then x0 = α_t z_t - σ_t v and ε = σ_t z_t + α_t v.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..batch import Batch
from ..nn.weighting import foreground_weights, row_means, weighted_mean

# 1024 rather than the usual 1000: every power-of-two step count (64, 32, …, 1) then strides
# the timesteps exactly, so progressive distillation's halved grids are subsets of each
# other and identical to diffusers' DDIM "trailing" timesteps.
DEFAULT_TRAIN_TIMESTEPS = 1024
PREDICTION_TYPES = ("v_prediction", "epsilon")
# How much worse (as a log ratio of errors) a clip must be denoised under a hard-negative
# caption than under its own before the hinge stops asking (`GaussianDiffusion.loss`).
NEGATIVE_MARGIN = 0.1
SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


def cosine_alphas_cumprod(num_timesteps: int = DEFAULT_TRAIN_TIMESTEPS, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule as diffusers builds it (`squaredcos_cap_v2`):
    betas from ᾱ(s) = cos²((s + 0.008) / 1.008 · π/2), capped at `max_beta`, then ᾱ_t."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta) for i in range(num_timesteps)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float32), dim=0)


def linear_alphas_cumprod(num_timesteps: int = DEFAULT_TRAIN_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear betas (diffusers' `linear`), as ᾱ_t."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, ...] to broadcast over a sample of like's rank."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


@dataclass
class DiffusionBatch(Batch):
    """What a diffusion loss eats: clean targets and the keyword conditioning of the model
    (text tokens, masks, conditioning channels …). Tensors in `cond` have batch first."""

    x0: torch.Tensor
    cond: dict[str, Any] = field(default_factory=dict)
    captions: list[str] | None = None  # what cond's text will encode, until it is (on the training device)
    negatives: list[str | None] | None = None  # a hard-negative caption per row (None: none), until encoded
    negative: CaptionNegatives | None = None  # the negatives encoded (`GaussianDiffusion.loss`)


@dataclass
class CaptionNegatives(Batch):
    """Hard-negative captions of a batch's rows, encoded as the model reads text; a row
    without one carries its own caption and is left out by `rows`."""

    rows: torch.Tensor  # [B] bool: the rows that have one
    text: torch.Tensor  # [B, L, D]
    text_mask: torch.Tensor  # [B, L]
    text_pooled: torch.Tensor  # [B, D]


@dataclass
class GaussianDiffusion:
    """A noise schedule and a parameterisation; everything else is arithmetic on them.

    `schedule` is "cosine" or "linear"; `prediction_type` is what the network outputs:
    "v_prediction" (Imagen Video's choice: well-scaled at every noise level, and what
    progressive distillation needs) or "epsilon"."""

    schedule: str = "cosine"
    num_train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS
    prediction_type: str = "v_prediction"
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        T = self.num_train_timesteps
        self.alphas_cumprod = cosine_alphas_cumprod(T) if self.schedule == "cosine" else linear_alphas_cumprod(T, self.beta_start, self.beta_end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scheduler_config(self) -> dict[str, Any]:
        """The diffusers scheduler keyword arguments that reproduce this schedule."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": SCHEDULES[self.schedule],
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
        }

    # ---- the forward process
    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α_t, σ_t) for integer timesteps t [B] (t = -1 means clean: α = 1, σ = 0),
        shaped to broadcast against `like`."""
        abar = self.alphas_cumprod.to(like.device)[t.long().clamp(min=0)]
        abar = torch.where(t.to(like.device) < 0, torch.ones_like(abar), abar)
        return _expand(abar.sqrt(), like).float(), _expand((1 - abar).sqrt(), like).float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = α_t x0 + σ_t ε."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def sample_timesteps(self, batch: int, device=None, generator: torch.Generator | None = None, high: int | None = None) -> torch.Tensor:
        """Uniform integer timesteps in [0, high or T)."""
        return torch.randint(0, high or self.num_train_timesteps, (batch,), generator=generator, device=device)

    # ---- conversions (all exact inverses of each other)
    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * noise - sigma * x0

    def x0_from_v(self, z: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, z)
        return alpha * z - sigma * v

    def eps_from_v(self, z: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, z)
        return sigma * z + alpha * v

    def x0_from_eps(self, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, z)
        return (z - sigma * eps) / alpha

    def eps_from_x0(self, z: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, z)
        return (z - alpha * x0) / sigma

    def predict_x0_eps(self, z: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's output, whatever it predicts, as (x0, ε)."""
        out = out.float()
        if self.prediction_type == "v_prediction":
            return self.x0_from_v(z, out, t), self.eps_from_v(z, out, t)
        return self.x0_from_eps(z, out, t), out

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output at z_t."""
        return self.v_target(x0, noise, t) if self.prediction_type == "v_prediction" else noise

    def ddim_step(self, z: torch.Tensor, out: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step z_t -> z_{t_prev} with per-sample timesteps (t_prev = -1:
        to clean data). Sampling uses diffusers' schedulers; this batched form exists for
        progressive distillation, whose every row sits at a different t."""
        x0, eps = self.predict_x0_eps(z, out, t)
        alpha, sigma = self.alpha_sigma(t_prev, z)
        return alpha * x0 + sigma * eps

    # ---- training
    def loss(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        cond: dict[str, Any] | None = None,
        *,
        cond_drop_prob: float = 0.0,
        foreground_weight: float = 0.0,
        weight_predicted_foreground: bool = False,
        generator: torch.Generator | None = None,
        negatives: CaptionNegatives | None = None,
        negative_weight: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """MSE between the network's output at a random (t, ε) and its target (v or ε).
        For v-prediction this weights x0-errors by 1 + SNR, which stays finite at t = 0 and
        non-zero at t = T (where ε-prediction's x0 is meaningless).

        With `cond_drop_prob` > 0, that share of rows trains unconditionally (the model is
        told `text_drop=True`) so classifier-free guidance has an unconditional model.
        `foreground_weight` > 0 weights the pixels where x0 is not backdrop that much more
        (kinema.nn.weighting): small objects otherwise hardly register in the mean. With
        `weight_predicted_foreground`, so are the pixels where the network's own x0 estimate
        draws something, so that a false object costs as much as a missing one.

        With `negatives` and `negative_weight` > 0, each row that has a hard-negative caption
        (and kept its text) adds `negative_weight` x max(0, NEGATIVE_MARGIN - gap), gap being
        the log of its error under the negative over its error under its own caption, at the
        same z_t. A denoising loss rewards the words that change most pixels; a clip played
        backwards differs from the caption's only in the order of its frames, and a model
        can reach a low loss without learning which way "right" points (imagen-video-shapes'
        base: its card). The hinge asks for exactly that difference (NegCLIP's hard
        negatives, Yuksekgonul et al. 2023, for a generator)."""
        cond = dict(cond or {})
        B = x0.shape[0]
        t = self.sample_timesteps(B, x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if cond_drop_prob > 0:
            cond["text_drop"] = drop_mask(B, cond_drop_prob, x0.device, generator)
        z = self.q_sample(x0, t, noise)
        out = model(z, t, **cond)
        target = self.target(x0, noise, t).float()
        error = (out.float() - target) ** 2
        predicted = None
        if weight_predicted_foreground and foreground_weight:  # no graph: the weights are constants
            predicted = self.predict_x0_eps(z, out.detach(), t)[0].clamp(-1, 1)
        weight = foreground_weights(x0, foreground_weight, predicted)
        denoise = weighted_mean(error, weight)
        if negatives is None or not negative_weight:
            return {"loss": denoise}
        # the same keys from every batch (DDP ranks log them together); NaN: nothing measured
        out = {"loss": denoise, "denoise": denoise.detach(), "negative_hinge": torch.full((), float("nan"), device=x0.device)}
        rows = negatives.rows & ~cond["text_drop"] if "text_drop" in cond else negatives.rows  # a dropped caption has nothing to contrast
        if rows.any():
            picked = {k: v[rows] if torch.is_tensor(v) and v.ndim and v.shape[0] == B else v for k, v in cond.items() if k != "text_drop"}
            picked.update(text=negatives.text[rows], text_mask=negatives.text_mask[rows], text_pooled=negatives.text_pooled[rows])
            wrong = model(z[rows], t[rows], **picked)
            w = None if weight is None else weight[rows]
            own, neg = row_means(error[rows], w), row_means((wrong.float() - target[rows]) ** 2, w)
            hinge = torch.relu(NEGATIVE_MARGIN - (neg.log() - own.log())).mean()
            out.update(loss=denoise + negative_weight * hinge, negative_hinge=hinge.detach())
        return out


# ---- classifier-free guidance (Ho & Salimans 2021)
def drop_mask(batch: int, prob: float, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """A boolean [B]: True for rows whose text is dropped (trained unconditionally)."""
    return torch.rand(batch, generator=generator, device=device) < prob


def _double(value: Any, batch: int) -> Any:
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


def classifier_free_guidance(model: Callable[..., torch.Tensor], z: torch.Tensor, t: torch.Tensor, cond: dict[str, Any] | None, scale: float) -> torch.Tensor:
    """uncond + scale · (cond - uncond), with the conditional and unconditional rows run as
    one batch (the model is told which rows are unconditional by `text_drop`). Scale 1 is
    the conditional prediction and costs one pass."""
    cond = dict(cond or {})
    B = z.shape[0]
    if scale == 1.0:
        return model(z, t, **cond)
    given = cond.pop("text_drop", None)
    doubled = {k: _double(v, B) for k, v in cond.items()}
    drop = torch.cat([torch.zeros(B, dtype=torch.bool, device=z.device), torch.ones(B, dtype=torch.bool, device=z.device)])
    if given is not None:
        drop[:B] = given
    out = model(torch.cat([z, z]), torch.cat([t, t]) if t.ndim else t, text_drop=drop, **doubled).float()
    conditional, unconditional = out[:B], out[B:]
    return unconditional + scale * (conditional - unconditional)


# ---- noise-conditioning augmentation (Ho et al. 2021, Cascaded Diffusion Models)
@dataclass
class NoiseAugmentation:
    """Noise a cascade stage's low-resolution conditioning input to level `aug_t` and tell
    the stage that level (it embeds `aug_t` like a timestep). Training draws aug_t uniformly
    from [0, max_timestep); sampling uses one fixed small level, so the stage learns to
    trust clean inputs and to repair the previous stage's artefacts."""

    diffusion: GaussianDiffusion
    max_timestep: int = 512  # training draws levels below this (half the schedule)
    sample_timestep: int = 64  # the fixed level used at sampling time (σ ≈ 0.1 on the cosine schedule)

    def __call__(self, x: torch.Tensor, aug_t: torch.Tensor | int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(noised x, aug_t [B]). aug_t None: a random training level per row; an int: that
        level for every row (at sampling, pass `self.sample_timestep`)."""
        B = x.shape[0]
        if aug_t is None:
            aug_t = self.diffusion.sample_timesteps(B, x.device, generator, high=self.max_timestep)
        elif not torch.is_tensor(aug_t):
            aug_t = torch.full((B,), int(aug_t), device=x.device, dtype=torch.long)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.diffusion.q_sample(x, aug_t, noise), aug_t
