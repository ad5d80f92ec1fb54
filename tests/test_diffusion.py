"""The shared diffusion core on tiny real models: schedules, objectives, guidance, noise
augmentation, diffusers sampling, progressive distillation, image→video inflation."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from kinema.diffusion import (
    SCHEDULERS,
    DiffusionBatch,
    GaussianDiffusion,
    NoiseAugmentation,
    classifier_free_guidance,
    distillation_loss,
    distillation_target,
    halving_schedule,
    make_scheduler,
    make_student,
    one_step_error,
    sample,
    step_grid,
)
from kinema.nn.unet import VideoUNet, VideoUNetConfig


def tiny_unet(seed: int = 0, **overrides) -> VideoUNet:
    torch.manual_seed(seed)
    config = dict(channels=16, channel_mults=(1, 2), sample_size=16, attention_resolutions=(8,), heads=2, dim_head=8, ff_mult=1.0, text_dim=8)
    return VideoUNet(VideoUNetConfig(**{**config, **overrides}))


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Perturb every weight (zero-initialised layers included) so outputs are not trivial."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("schedule,diffusers_name", [("cosine", "squaredcos_cap_v2"), ("linear", "linear")])
def test_schedules_match_diffusers(schedule: str, diffusers_name: str) -> None:
    for T in (1000, 1024):
        ours = GaussianDiffusion(schedule, num_train_timesteps=T).alphas_cumprod
        theirs = DDPMScheduler(num_train_timesteps=T, beta_schedule=diffusers_name).alphas_cumprod
        assert torch.allclose(ours, theirs, atol=1e-7, rtol=0)
        assert ours[0] > 0.99 and ours[-1] < 0.01 and bool((ours[1:] < ours[:-1]).all())


def test_conversions_round_trip() -> None:
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 2, 4, 4, generator=g), torch.randn(6, 3, 2, 4, 4, generator=g)
    t = torch.tensor([0, 1, 100, 500, 900, 1023])
    z = d.q_sample(x0, t, eps)
    v = d.v_target(x0, eps, t)
    assert torch.allclose(d.x0_from_v(z, v, t), x0, atol=1e-5) and torch.allclose(d.eps_from_v(z, v, t), eps, atol=1e-5)
    assert torch.allclose(d.v_target(d.x0_from_v(z, v, t), d.eps_from_v(z, v, t), t), v, atol=1e-5)
    mid = t[1:5]
    assert torch.allclose(d.x0_from_eps(z[1:5], eps[1:5], mid), x0[1:5], atol=1e-3)
    assert torch.allclose(d.eps_from_x0(z[1:5], x0[1:5], mid), eps[1:5], atol=1e-3)
    # a perfect v-predictor makes DDIM land exactly on x0 in one step
    assert torch.allclose(d.ddim_step(z, v, t, torch.full_like(t, -1)), x0, atol=1e-5)


def test_batched_ddim_step_is_the_samplers_step() -> None:
    """Distillation's teacher steps (`ddim_step`, every row at its own t) are the steps a
    distilled student samples with: diffusers' DDIM on the trailing grid, down to clean data."""
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(2)
    scheduler = make_scheduler("ddim", d)
    scheduler.set_timesteps(8)
    for t, t_prev in zip(scheduler.timesteps.tolist(), [*scheduler.timesteps.tolist()[1:], -1]):
        z, v = torch.randn(2, 3, 2, 8, 8, generator=g), 3 * torch.randn(2, 3, 2, 8, 8, generator=g)
        theirs = scheduler.step(v, t, z, return_dict=False)[0]
        torch.testing.assert_close(d.ddim_step(z, v, torch.full((2,), t), torch.full((2,), t_prev)), theirs, atol=1e-4, rtol=1e-4)


def test_q_sample_statistics() -> None:
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((1, 200_000), 0.5)
    for t in (10, 400, 1000):
        tt = torch.tensor([t])
        z = d.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        alpha, sigma = (float(a) for a in d.alpha_sigma(tt, x0))
        assert alpha**2 + sigma**2 == pytest.approx(1.0, abs=1e-6)
        assert float(z.mean()) == pytest.approx(0.5 * alpha, abs=0.01)
        assert float(z.std()) == pytest.approx(sigma, rel=0.02, abs=2e-3)


def test_a_tiny_unet_overfits_one_clip_with_v_prediction() -> None:
    d = GaussianDiffusion(prediction_type="v_prediction")
    model = tiny_unet(text_dim=0)
    clip = torch.linspace(-1, 1, 3 * 2 * 16 * 16).reshape(1, 3, 2, 16, 16).repeat(2, 1, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    t_eval, noise_eval = torch.tensor([100, 900]), torch.randn(clip.shape, generator=g)

    def eval_loss() -> float:
        with torch.no_grad():
            out = model(d.q_sample(clip, t_eval, noise_eval), t_eval)
            return float(((out - d.v_target(clip, noise_eval, t_eval)) ** 2).mean())

    before = eval_loss()
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = d.loss(model, clip)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert eval_loss() < 0.6 * before


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_samples_the_right_shape_repeatably(name: str) -> None:
    model = randomize(tiny_unet()).eval()
    cond = {"text": torch.randn(2, 3, 8), "text_mask": torch.ones(2, 3, dtype=torch.bool)}
    calls = []
    run = lambda seed: sample(model, (2, 3, 2, 16, 16), name, 4, 2.0, torch.Generator().manual_seed(seed), lambda i, n: calls.append((i, n)), cond=cond)  # noqa: E731
    a = run(0)
    assert a.shape == (2, 3, 2, 16, 16) and torch.isfinite(a).all()
    assert calls[-1] == (4, 4)
    assert torch.equal(a, run(0)) and not torch.equal(a, run(1))


@pytest.mark.parametrize("name", ["ddim", "dpm++"])
def test_known_values_are_held_through_sampling(name: str) -> None:
    """A story event's first frame is known in advance (the film's last): held through
    sampling by the replacement method it comes out exactly, and the frames after it, drawn
    by a model that sees it at every step, differ from a draw without it."""
    model = randomize(tiny_unet()).eval()
    cond = {"text": torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0)), "text_mask": torch.ones(1, 3, dtype=torch.bool)}
    first = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    where = torch.arange(2).reshape(1, 1, -1, 1, 1) == 0
    run = lambda known: sample(model, (1, 3, 2, 16, 16), name, 4, 2.0, torch.Generator().manual_seed(0), cond=cond, known=known)  # noqa: E731
    held, free = run((first, where)), run(None)
    assert torch.equal(held[:, :, :1], first) and not torch.equal(free[:, :, :1], first)
    assert not torch.equal(held[:, :, 1:], free[:, :, 1:])


def test_ddim_never_thresholds() -> None:
    """DDIM re-noises with the unclipped ε, so clipping its x0 wrecks a guided sample: asked
    to threshold, DDIM samples as without, while DPM-Solver++ (which steps from x0) clips."""
    model = randomize(tiny_unet()).eval()
    cond = {"text": torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0)), "text_mask": torch.ones(1, 3, dtype=torch.bool)}
    run = lambda name, clip: sample(model, (1, 3, 2, 16, 16), name, 4, 4.0, torch.Generator().manual_seed(0), cond=cond, thresholding=clip)  # noqa: E731
    assert not torch.equal(run("dpm++", True), run("dpm++", False)), "this model's x0 leaves [-1, 1], so a clip shows"
    assert torch.equal(run("ddim", True), run("ddim", False))
    assert not make_scheduler("ddim", thresholding=True).config.thresholding


def test_ddim_refuses_step_counts_that_do_not_divide_the_schedule() -> None:
    """diffusers' DDIM steps from t to t - T // n, which is the next timestep of its own
    trailing grid only when n divides T; DPM-Solver++ steps along its list and takes any n."""
    d = GaussianDiffusion()
    for n, on_grid in ((16, True), (24, False)):
        scheduler = make_scheduler("ddim", d)
        scheduler.set_timesteps(n)
        visited = scheduler.timesteps.tolist()
        assert (visited[1] == visited[0] - d.num_train_timesteps // n) == on_grid
    zeros = lambda z, t, **cond: torch.zeros_like(z)  # noqa: E731
    with pytest.raises(ValueError, match="ddim needs a step count that divides 1024: one of 1, 2, 4, .*, 1024; got 24"):
        sample(zeros, (1, 3, 1, 4, 4), "ddim", 24, diffusion=d)
    assert sample(zeros, (1, 3, 1, 4, 4), "ddim", 16, diffusion=d).shape == (1, 3, 1, 4, 4)
    assert sample(zeros, (1, 3, 1, 4, 4), "dpm++", 24, diffusion=d).shape == (1, 3, 1, 4, 4)


def test_classifier_free_guidance() -> None:
    model = randomize(tiny_unet()).eval()
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(2, 3, 2, 16, 16, generator=g), torch.tensor([300, 700])
    cond = {"text": torch.randn(2, 3, 8, generator=g), "text_mask": torch.ones(2, 3, dtype=torch.bool)}
    with torch.no_grad():
        conditional = model(z, t, **cond)
        unconditional = model(z, t, **cond, text_drop=torch.ones(2, dtype=torch.bool))
        assert not torch.allclose(conditional, unconditional, atol=1e-4), "text must matter"
        assert torch.equal(classifier_free_guidance(model, z, t, cond, 1.0), conditional)
        guided = classifier_free_guidance(model, z, t, cond, 3.0)
        assert torch.allclose(guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-4)
        # the batched pass at scale 1 (through the formula) is the conditional prediction too
        batched = classifier_free_guidance(model, z, t, cond, 1.0 + 1e-9)
        assert torch.allclose(batched, conditional, atol=1e-4)
        # a dropped row sees the null text, whatever text it was given
        other = {"text": torch.randn(2, 3, 8, generator=g), "text_mask": torch.ones(2, 3, dtype=torch.bool)}
        assert torch.allclose(model(z, t, **other, text_drop=torch.ones(2, dtype=torch.bool)), unconditional, atol=1e-5)


def test_noise_augmentation_is_applied_at_the_level_told() -> None:
    d = GaussianDiffusion()
    augment = NoiseAugmentation(d, max_timestep=300, sample_timestep=64)
    x = torch.rand(4, 3, 2, 32, 32) * 2 - 1
    noised, aug_t = augment(x, 200, torch.Generator().manual_seed(0))
    assert aug_t.tolist() == [200] * 4
    alpha, sigma = d.alpha_sigma(aug_t, x)
    residual = (noised - alpha * x) / sigma
    assert float(residual.std()) == pytest.approx(1.0, abs=0.03) and float(residual.mean()) == pytest.approx(0.0, abs=0.03)
    _, random_t = augment(torch.zeros(256, 1), generator=torch.Generator().manual_seed(1))
    assert int(random_t.min()) >= 0 and int(random_t.max()) < 300 and len(set(random_t.tolist())) > 50
    clean, zero_t = augment(x, 0, torch.Generator().manual_seed(0))
    assert torch.allclose(clean, x, atol=0.05)


def test_progressive_distillation_brings_one_student_step_closer_to_two_teacher_steps() -> None:
    assert halving_schedule(64, 8) == [32, 16, 8]
    assert step_grid(4, GaussianDiffusion()).tolist() == [1023, 767, 511, 255]
    d = GaussianDiffusion()
    teacher = randomize(tiny_unet(text_dim=0), scale=0.05).eval()
    student = make_student(teacher)
    g = torch.Generator().manual_seed(0)
    batch = DiffusionBatch(torch.rand(2, 3, 2, 16, 16, generator=g) * 2 - 1)
    before = one_step_error(student.eval(), teacher, d, batch, student_steps=2)
    loss_fn = distillation_loss(teacher, d, student_steps=2, generator=g)
    optim = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student.train()
    for _ in range(10):
        loss = loss_fn(student, batch)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = one_step_error(student.eval(), teacher, d, batch, student_steps=2)
    assert after < 0.85 * before


def test_distillation_weights_an_error_on_the_object_above_one_on_the_backdrop() -> None:
    """With the teacher's foreground weight, a student that is wrong on the small object
    costs more than one wrong on as many backdrop pixels (and the same without it)."""
    d = GaussianDiffusion()
    teacher = randomize(tiny_unet(text_dim=0), scale=0.05).eval()
    x0 = torch.full((1, 3, 2, 16, 16), -0.6)
    x0[:, :, :, 4:8, 4:8] = 0.8  # a 4x4 object on a flat backdrop
    on_object = torch.zeros(1, 1, 1, 16, 16, dtype=torch.bool)
    on_object[..., 4:8, 4:8] = True
    on_backdrop = torch.zeros_like(on_object)
    on_backdrop[..., 10:14, 10:14] = True  # as many pixels, far from the object's rim

    class WrongOn(torch.nn.Module):
        """Predicts the exact distillation target except +1 on `where`."""

        def __init__(self, where: torch.Tensor) -> None:
            super().__init__()
            self.where = where

        def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return distillation_target(teacher, d, z, t, 512, {}) + self.where.float()

    def loss(where: torch.Tensor, weight: float) -> float:
        fn = distillation_loss(teacher, d, student_steps=2, foreground_weight=weight, generator=torch.Generator().manual_seed(0))
        return float(fn(WrongOn(where), DiffusionBatch(x0))["loss"])

    assert loss(on_object, 0.0) == pytest.approx(loss(on_backdrop, 0.0), rel=1e-5)
    assert loss(on_object, 16.0) > 5 * loss(on_backdrop, 16.0)


def test_weighting_the_predicted_foreground_makes_a_false_object_cost_like_a_missing_one() -> None:
    """With objects weighted up on the target alone, drawing an object where the target has
    backdrop is far cheaper than leaving the real one out, which teaches a model to add
    objects; weighting the model's own x0 estimate's foreground too evens the two out."""
    d = GaussianDiffusion()
    x0 = torch.full((2, 3, 2, 16, 16), -0.6)
    x0[:, :, :, 2:6, 2:6] = 0.8  # a 4x4 object on a flat backdrop
    missing = x0.clone()
    missing[:, :, :, 2:6, 2:6] = -0.6
    extra = x0.clone()
    extra[:, :, :, 10:14, 10:14] = 0.8  # a second object of the same size, far from the first

    def drawing(x0_hat: torch.Tensor):
        """A network whose x0 estimate is `x0_hat` at every z_t: v = (αz - x0_hat) / σ."""

        def model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            alpha, sigma = d.alpha_sigma(t, z)
            return (alpha * z - x0_hat) / sigma

        return model

    def loss(x0_hat: torch.Tensor, predicted: bool) -> float:
        out = d.loss(drawing(x0_hat), x0, foreground_weight=16.0, weight_predicted_foreground=predicted, generator=torch.Generator().manual_seed(0))
        return float(out["loss"])

    assert loss(extra, False) < loss(missing, False) / 5
    assert loss(extra, True) > loss(missing, True) / 2
    assert loss(missing, True) == pytest.approx(loss(missing, False), rel=1e-5)  # nothing drawn, nothing added


def test_inflated_image_unet_makes_each_frame_as_the_image_model_did() -> None:
    image = randomize(tiny_unet(temporal=False)).eval()
    video = tiny_unet(seed=1, temporal=True).eval()
    left_out = video.load_image_weights(image.state_dict())
    assert left_out and all(("temporal" in k or "time" in k) for k in left_out)
    g = torch.Generator().manual_seed(0)
    clip, t = torch.randn(1, 3, 4, 16, 16, generator=g), torch.tensor([500])
    text = {"text": torch.randn(1, 3, 8, generator=g)}
    with torch.no_grad():
        out = video(clip, t, **text)
        for f in range(4):
            frame = image(clip[:, :, f : f + 1], t, **text)
            assert torch.allclose(out[:, :, f : f + 1], frame, atol=1e-4)
        # and an image through the video model (T = 1) is the image model's image
        assert torch.allclose(video(clip[:, :, :1], t, **text), image(clip[:, :, :1], t, **text), atol=1e-4)
    with pytest.raises(ValueError, match="not an image version"):
        tiny_unet(channels=8).load_image_weights(image.state_dict())


def test_the_likeliest_sample_is_the_one_the_model_denoises_best() -> None:
    """A model that has seen only one clip denoises that clip perfectly and any other clip
    worse: among K samples it keeps that clip, whatever its place, with one row of
    conditioning spread over the K."""
    from kinema.diffusion.rerank import denoising_error, likeliest

    d = GaussianDiffusion()
    clip = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    seen = []

    def knows_one_clip(z, t, cond):  # the v that explains z_t by `clip`
        seen.append(cond.shape[0])
        alpha, sigma = d.alpha_sigma(t, z)
        return alpha * (z - alpha * clip) / sigma - sigma * clip

    others = torch.rand(3, 3, 2, 4, 4) * 2 - 1
    for place in range(4):
        samples = torch.cat([others[:place], clip, others[place:]])
        error = denoising_error(knows_one_clip, d, samples, {"cond": torch.zeros(4, 1)}, torch.Generator().manual_seed(place))
        assert int(error.argmin()) == place and error[place] < 1e-6 < float(error.max())
        assert torch.equal(likeliest(knows_one_clip, d, samples, {"cond": torch.zeros(1, 1)}, torch.Generator().manual_seed(0)), clip)
    assert set(seen) == {4}


def test_scorers_agree_on_the_candidate_both_rank_high_whatever_their_scales() -> None:
    """One scorer puts candidate 0 first, another candidate 2; both put candidate 1 second,
    near the top. Together they keep 1, and a scorer's scale or offset changes nothing."""
    from kinema.diffusion.rerank import agreed

    a, b = torch.tensor([3.0, 2.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 3.0, 0.0])
    assert int(agreed(a, b).argmax()) == 1 and int(agreed(a).argmax()) == 0 and int(agreed(b).argmax()) == 2
    assert torch.allclose(agreed(a, b), agreed(1000 * a - 7, b / 1000))
    assert torch.equal(agreed(a, torch.zeros(4)), agreed(a)), "a scorer that finds the candidates alike moves nothing"


def test_a_contrast_keeps_the_sample_that_fits_its_caption_and_not_the_wrong_way() -> None:
    """Under its caption a model knows clip P, under the wrong way's caption clip Q, a little
    away. The sample halfway between them is denoised best under the caption, but just as well
    under the wrong way; one past P, away from Q, fits the caption a little worse and the wrong
    way far worse. The contrast keeps that one, and leaves the generator where it would be."""
    from kinema.diffusion.rerank import likeliest

    d = GaussianDiffusion()
    P = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    Q = P + 0.2 * torch.randn_like(P)

    def knows(z, t, cond):  # the v that explains z_t by P (cond 0) or by Q (cond 1)
        clip = torch.where(cond.reshape(-1, 1, 1, 1, 1) > 0, Q, P)
        alpha, sigma = d.alpha_sigma(t, z)
        return alpha * (z - alpha * clip) / sigma - sigma * clip

    between, past = (P + Q) / 2, P + 0.6 * (P - Q)
    samples = torch.cat([between, past])
    caption, wrong = {"cond": torch.zeros(1, 1)}, {"cond": torch.ones(1, 1)}
    plain, contrasted = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(likeliest(knows, d, samples, caption, plain), between)
    assert torch.equal(likeliest(knows, d, samples, caption, contrasted, [wrong], contrast=0.5), past)
    assert torch.equal(plain.get_state(), contrasted.get_state())
    assert torch.equal(likeliest(knows, d, samples, caption, torch.Generator().manual_seed(1), [wrong], contrast=0.0), between)
