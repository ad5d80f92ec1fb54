"""ImagenVideoPipeline: text → base (8×32², 4 fps) → TSR (16×32², 8 fps) → SSR (16×64²).

Each stage is a v-prediction VideoUNet sampled by a diffusers scheduler; every stage reads
the frozen text encoder's tokens (cross-attention) and pooled vector. Between stages the
low-resolution clip is noise-augmented to a fixed small level that the next stage is told.
A distilled stage (`base_distilled`, …) takes few deterministic DDIM steps with its
guidance baked in; it is used unless the caller asks for other steps or for a guidance
(for the base, any guidance runs the undistilled stage: that is how its teacher is reached
and scored).

Stories: each event's base stage is conditioned on the last frame made so far (downsampled
to 32×32), so the film continues without a cut; only that one frame is carried. As in
phenaki-shapes, a story keeps what each sentence leaves (`hold_objects`,
kinema.data.continuity): "the red circle moves up" is drawn from the film's last frame with
its other objects painted out, and they are laid back as the film has them; "a yellow
triangle appears" is drawn alone and laid on the film at a free place; after "the scene
changes to the desert" the film's objects are carried onto the new background; and since the
base sees the film only at 32×32 and drifts to another background, an event whose sentence
keeps the background is lifted onto the film's (`keep_backdrop`), and one that continues
the film (a motion, a disappearance, a zoom) has the base's first frame held to the film's
last while it samples. A caption naming two
objects is drawn one object at a time (`compose_objects`): each object's clause alone, the
second laid on the first, clear of it. And since the base draws a named object twice in
most of its samples, each object a sentence names is kept once in the base's clip, its
other copies painted out before tsr and ssr draw from it (`one_copy`, kinema.data.copies).
What a story's first scene or a newcomer placed is moved where the world can act out the
next sentences from (`leave_room`, kinema.data.room). Of several base candidates, the one
kept is the one the undistilled base denoises best under the caption, or, in a folder with a
`matcher` (kinema.models.matcher) and `rerank="matcher"`, the one the matcher finds fits the
caption best, or with `rerank="likelihood+matcher"` the best by both, each candidate first
kept to one copy of its objects.

Folder layout (diffusers style): model_index.json, base/, tsr/, ssr/, optional
base_distilled/ (tsr_distilled/, ssr_distilled/), optional matcher/, and scheduler/config.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ... import checkpoint as ckpt
from ...data.continuity import hold, keep_backdrop, lay_second, leaves_backdrop, starts_as_film, story_casts
from ...data.copies import drawn_once, named_colors
from ...data.grounding import first_object_caption, mirrored_caption, second_object_caption, wrong_way_captions
from ...data.room import room_for
from ...data.shapes import to_model_range, to_uint8_frames
from ...diffusion import GaussianDiffusion, NoiseAugmentation, sample
from ...diffusion.rerank import agreed, denoising_error, likeliest
from ...diffusion.sampling import SCHEDULERS
from ...nn.attention import trim_padding
from ...nn.unet import VideoUNet
from ...pipelines import Callback, ModelFolder, Passes, Pipeline, draw_alone, register_pipeline
from ...precision import default_device
from ..matcher import VideoTextMatcher
from .data import STAGES, base_cond, downsample, ssr_cond, tsr_cond

if TYPE_CHECKING:
    from ...text import TextEmbedding, TextEncoder

STAGE_ORDER = ("base", "tsr", "ssr")
DEFAULT_STEPS = {"base": 24, "tsr": 8, "ssr": 4}  # sampling steps of each undistilled stage
RERANKERS = ("likelihood", "matcher", "likelihood+matcher")  # what keeps one of several base candidates (ImagenVideoSampler.rerank)


def _text_cond(text: TextEmbedding) -> dict[str, torch.Tensor]:
    """A stage's text inputs: the caption's tokens (their shared padding cut), mask and pooled vector."""
    tokens, mask = trim_padding(text.tokens, text.mask)
    return {"text": tokens, "text_mask": mask, "text_pooled": text.pooled}


@dataclass
class ImagenVideoSampler:
    """Sampling settings, saved as the model folder's scheduler/config.json."""

    scheduler: str = "dpm++"  # ddpm | ddim | dpm++ (distilled stages always use ddim)
    steps: dict[str, int] = field(default_factory=dict)  # stage -> sampling steps; stages not named keep DEFAULT_STEPS (__post_init__)
    guidance_scale: float = 4.0  # classifier-free guidance of the base (where the text decides the content)
    sr_guidance_scale: float = 1.0  # of tsr and ssr (1 = none: their inputs already fix the content)
    aug_timestep: int = NoiseAugmentation.sample_timestep  # noise-conditioning augmentation level of tsr/ssr inputs at sampling
    thresholding: bool = True  # guided stages clip their predicted x0 to [-1, 1] (kinema.diffusion.sampling.make_scheduler)
    distilled_steps: dict[str, int] = field(default_factory=dict)  # stage -> steps its *_distilled model was distilled to
    compose_objects: bool = True  # a caption naming two objects: each object drawn alone, the second laid on the first
    hold_objects: bool = True  # a story event keeps what its sentence leaves as the film has it: objects, background, first frame (kinema.data.continuity)
    one_copy: bool = True  # each object a caption names is kept once in the base's clip, its other copies painted out (kinema.data.copies)
    leave_room: bool = True  # a story's first scene or newcomer is moved where the next sentences can be acted out from it (kinema.data.room)
    zoom_film: bool = True  # a story's zoom is the film's last frame scaled as the base's zoom scales its objects (kinema.data.continuity.zoomed)
    candidates: int = 1  # base samples drawn per pass; one is kept, as `rerank` says
    direction_contrast: float = 0.0  # with candidates: the kept one's error under the caption plus this times its margin over the caption sent each wrong way (kinema.data.grounding.wrong_way_captions)
    played_backwards: bool = False  # with a matcher's rerank: each candidate drawn from no film played backwards is a candidate too (the world is closed under playing backwards)
    mirror_matcher: bool = False  # the matcher asked of each candidate as drawn and mirrored left to right under the caption mirrored (kinema.data.grounding.mirrored_caption), the two scores averaged
    rerank: str = "likelihood"  # with candidates, what keeps one: "likelihood" (the undistilled base's denoising error), "matcher" (the folder's matcher) or "likelihood+matcher" (both, kinema.diffusion.rerank.agreed); the matcher's only for events drawn from no film
    schedule: str = GaussianDiffusion.schedule
    num_train_timesteps: int = GaussianDiffusion.num_train_timesteps
    prediction_type: str = GaussianDiffusion.prediction_type
    beta_start: float = GaussianDiffusion.beta_start  # linear schedule only
    beta_end: float = GaussianDiffusion.beta_end

    def __post_init__(self):
        self.steps = {**DEFAULT_STEPS, **self.steps}

    def guidance(self, stage: str) -> float:
        """A stage's own classifier-free guidance."""
        return self.guidance_scale if stage == "base" else self.sr_guidance_scale

    def diffusion(self) -> GaussianDiffusion:
        return GaussianDiffusion(self.schedule, self.num_train_timesteps, self.prediction_type, self.beta_start, self.beta_end)


@register_pipeline
class ImagenVideoPipeline(Pipeline):
    name = "imagen-video"

    def __init__(
        self,
        stages: dict[str, VideoUNet],
        text_encoder: TextEncoder,
        sampler: ImagenVideoSampler | None = None,
        device: str | torch.device = "cpu",
        matcher: VideoTextMatcher | None = None,
    ):
        missing = [s for s in STAGE_ORDER if s not in stages]
        if missing:
            raise ValueError(f"an Imagen Video cascade needs stages {', '.join(STAGE_ORDER)}; missing {', '.join(missing)}")
        self.stages = {name: model.eval().to(device) for name, model in stages.items()}
        self.matcher = None if matcher is None else matcher.eval().to(device)
        self.text_encoder = text_encoder
        self.sampler = sampler or ImagenVideoSampler()
        self.device = torch.device(device)
        self.diffusion = self.sampler.diffusion()

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None) -> ImagenVideoPipeline:
        model = ModelFolder.read(folder)
        stages = dict(model.components)
        matcher = stages.pop("matcher", None)
        if matcher is not None and not isinstance(matcher, VideoTextMatcher):
            raise ckpt.CheckpointError(f"{folder}/matcher: expected a VideoTextMatcher, found {type(matcher).__name__}")
        for name, stage in stages.items():
            if not isinstance(stage, VideoUNet):
                raise ckpt.CheckpointError(f"{folder}/{name}: expected a VideoUNet, found {type(stage).__name__}")
        missing = [s for s in STAGE_ORDER if s not in stages]
        if missing:
            raise ckpt.CheckpointError(f"{folder}: an Imagen Video folder needs components {', '.join(STAGE_ORDER)}; missing {', '.join(missing)}")
        return cls(stages, model.text_encoder(), model.sampler(ImagenVideoSampler), device or default_device(), matcher)

    def save_pretrained(self, folder: str | os.PathLike, extra: dict | None = None, dtype: torch.dtype | None = torch.bfloat16) -> Path:
        """Write the cascade; weights in bf16 by default (half the size, loaded back as fp32)."""
        components = self.stages if self.matcher is None else {**self.stages, "matcher": self.matcher}
        return self._save_folder(folder, components, self.sampler, extra, dtype)

    # ---- one stage
    def _plan(self, stage: str, steps: int | None, guidance: float | None, scheduler: str | None = None) -> tuple[VideoUNet, str, int, float]:
        """(model, scheduler, steps, guidance) for a stage, given the caller's steps and
        guidance_scale. Only the base takes the caller's guidance: tsr and ssr keep their own,
        their inputs already fix the content. A stage's distilled model runs when there is one
        and the caller asked for no guidance and no other steps (its guidance is baked in)."""
        s = self.sampler
        if stage != "base":
            guidance = None
        distilled = self.stages.get(f"{stage}_distilled")
        if distilled is not None and stage in s.distilled_steps and guidance is None and steps in (None, s.distilled_steps[stage]):
            return distilled, "ddim", s.distilled_steps[stage], 1.0  # guidance is baked into the student
        steps = s.steps[stage] if steps is None else steps
        return self.stages[stage], scheduler or s.scheduler, steps, s.guidance(stage) if guidance is None else guidance

    def _run_stage(
        self, stage, text, cond: dict, generator, steps, guidance, scheduler, callback, known=None, candidates: int = 1,
        negatives: TextEmbedding | None = None, contrast: float = 0.0, keep_all: bool = False,
    ) -> torch.Tensor:
        """One stage's sample [1, 3, T, H, W]; with `candidates` > 1, the likeliest of that many
        under the stage's undistilled model, against the `negatives` captions by `contrast`
        (`kinema.diffusion.rerank.likeliest`), or all of them [candidates, ...] (`keep_all`)."""
        model, scheduler, steps, guidance = self._plan(stage, steps, guidance, scheduler)
        spec = STAGES[stage]
        shape = (candidates, 3, spec.frames, spec.size, spec.size)
        captioned = {**cond, **_text_cond(text)}
        rows = {k: v.expand(candidates, *v.shape[1:]) for k, v in captioned.items()}
        with self._autocast():
            samples = sample(
                model, shape, scheduler, steps, guidance, generator, callback, cond=rows, diffusion=self.diffusion,
                thresholding=self.sampler.thresholding and guidance > 1, device=self.device, known=known,
            ).clamp(-1, 1)
            if candidates == 1 or keep_all:
                return samples
            against = [] if negatives is None else [{**cond, **_text_cond(negatives[i])} for i in range(len(negatives))]
            return likeliest(self.stages[stage], self.diffusion, samples, captioned, generator, against, contrast)

    def _best(self, clips: torch.Tensor, sentence: str, text: TextEmbedding, cond: dict, draw: dict) -> int:
        """Which of the base's candidates [K, ...] (each kept to one copy of its objects) to
        keep: the matcher's best fit to the caption, or with rerank="likelihood+matcher" the
        best by the matcher and by the undistilled base's denoising error together: each errs
        on candidates the other ranks right (the imagen-video-shapes card, "Likelihood and
        matcher together"). With `mirror_matcher`, the matcher is asked as drawn and in a mirror."""
        mirror = mirrored_caption(sentence) if draw["mirror"] else None
        fit = self.matcher.rank(clips, text, None if mirror is None else self.text_encoder.encode([mirror], device=self.device))
        if draw["rerank"] == "matcher":
            return int(fit.argmax())
        rows = {k: v.expand(len(clips), *v.shape[1:]) for k, v in {**cond, **_text_cond(text)}.items()}
        with self._autocast():
            error = denoising_error(self.stages["base"], self.diffusion, clips, rows, draw["generator"])
        return int(agreed(fit, -error).argmax())

    def stage_steps(self, num_inference_steps: int | None = None, guidance_scale: float | None = None) -> dict[str, int]:
        return {stage: self._plan(stage, num_inference_steps, guidance_scale)[2] for stage in STAGE_ORDER}

    # ---- the cascade, event after event
    def _cascade(self, sentence: str, context: np.ndarray | None, draw: dict, steps: Callback | None, from_context: bool = False) -> np.ndarray:
        """One event's frames [T, H, W, 3] uint8 for `sentence`: base (8 frames at 32x32, from
        the text and the film's last frame `context` [H, W, 3] uint8, if any), then temporal and
        spatial super-resolution. `steps` hears each stage's steps, counted over the pass.
        `from_context`: the event starts as `context` (a motion, a disappearance, a zoom), so the
        base's first frame is held to it while it samples (`sample`'s `known`), as phenaki-shapes
        keeps an event's first token grid; tsr and ssr redraw it from the base's (held there
        too, squares drawn rounded in one event stayed rounded in the next: story events 201
        against 249 of 432 at eval seeds 0-3, though boundaries 375 against 352 of 396)."""
        per_stage, generator, augment = draw["per_stage"], draw["generator"], draw["augment"]
        text = self.text_encoder.encode([sentence], device=self.device)

        def progress(offset: int) -> Callback | None:
            return None if steps is None else (lambda i, n: steps(offset + i, n))

        # 1. base: 8 frames at 32x32, from text and the last frame so far
        small = None if context is None else downsample(to_model_range(context[None])[None].to(self.device))
        has_context = torch.tensor([small is not None], device=self.device)
        cond = {"cond": base_cond(small, has_context)}
        first = torch.arange(STAGES["base"].frames, device=self.device).reshape(1, 1, -1, 1, 1) == 0
        known = (small, first) if from_context and small is not None else None
        matched = draw["rerank"] != "likelihood" and draw["candidates"] > 1 and context is None  # it learned scenes, not a film's next event
        wrong = wrong_way_captions(sentence) if draw["candidates"] > 1 and draw["contrast"] and not matched else []
        negatives = self.text_encoder.encode(wrong, device=self.device) if wrong else None
        low_fps = self._run_stage("base", text, cond, generator, *draw["plan"], progress(0), known, draw["candidates"], negatives, draw["contrast"], matched)
        if draw["one_copy"] and (colors := named_colors(sentence)):
            for k, clip in enumerate(low_fps):
                frames = to_uint8_frames(clip)
                once = drawn_once(frames, colors)
                if not np.array_equal(once, frames):  # else tsr draws from the base's own clip, not its 8-bit copy
                    low_fps[k] = to_model_range(once).to(self.device)
        if matched:
            if draw["backwards"]:  # each candidate's reverse is one more, at no cost of drawing: the base draws an axis, either way along it
                low_fps = torch.cat([low_fps, low_fps.flip(2)])
            low_fps = low_fps[self._best(low_fps, sentence, text, cond, draw)][None]
        # 2. temporal super-resolution: 16 frames at 32x32
        low, aug_t = augment(low_fps, augment.sample_timestep, generator)
        low_res = self._run_stage("tsr", text, {"cond": tsr_cond(low), "aug_t": aug_t}, generator, *draw["plan"], progress(per_stage["base"]))
        # 3. spatial super-resolution: 16 frames at 64x64
        low, aug_t = augment(low_res, augment.sample_timestep, generator)
        video = self._run_stage("ssr", text, {"cond": ssr_cond(low), "aug_t": aug_t}, generator, *draw["plan"], progress(per_stage["base"] + per_stage["tsr"]))
        return to_uint8_frames(video[0])

    @torch.inference_mode()
    def events(
        self,
        sentences: Sequence[str],
        *,
        seed: int = 0,
        callback: Callback | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        compose_objects: bool | None = None,
        hold_objects: bool | None = None,
        candidates: int | None = None,
        direction_contrast: float | None = None,
        rerank: str | None = None,
        one_copy: bool | None = None,
        leave_room: bool | None = None,
        zoom_film: bool | None = None,
        played_backwards: bool | None = None,
        mirror_matcher: bool | None = None,
    ) -> Iterator[np.ndarray]:
        """`num_inference_steps` sets every stage's steps (default: the folder's, with distilled
        stages where present); `guidance_scale` the base's classifier-free guidance;
        `scheduler` (ddpm | ddim | dpm++) overrides the folder's sampler for undistilled stages;
        `compose_objects`, `hold_objects`, `candidates`, `direction_contrast`, `rerank`, `played_backwards`, `mirror_matcher`, `one_copy`, `leave_room` and `zoom_film` as in the sampler's settings (without
        `hold_objects`, each story event is drawn from the film's last frame as the base
        continues it, and nothing of the film is held)."""
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        s = self.sampler
        candidates = s.candidates if candidates is None else candidates
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        contrast = s.direction_contrast if direction_contrast is None else direction_contrast
        if contrast < 0:
            raise ValueError(f"direction_contrast must be at least 0, got {contrast}")
        rerank = s.rerank if rerank is None else rerank
        if rerank not in RERANKERS:
            raise ValueError(f"unknown rerank {rerank!r}; choose one of {', '.join(RERANKERS)}")
        if rerank != "likelihood" and self.matcher is None:
            raise ValueError(f"rerank={rerank!r} needs a model folder with a matcher (kinema train matcher --into FOLDER)")
        per_stage = self.stage_steps(num_inference_steps, guidance_scale)
        draw = dict(
            per_stage=per_stage, plan=(num_inference_steps, guidance_scale, scheduler),
            generator=torch.Generator(self.device).manual_seed(seed),
            augment=NoiseAugmentation(self.diffusion, sample_timestep=s.aug_timestep), candidates=candidates, contrast=contrast, rerank=rerank,
            one_copy=s.one_copy if one_copy is None else one_copy, backwards=s.played_backwards if played_backwards is None else played_backwards,
            mirror=s.mirror_matcher if mirror_matcher is None else mirror_matcher,
        )
        compose = s.compose_objects if compose_objects is None else compose_objects
        keep = s.hold_objects if hold_objects is None else hold_objects  # what a sentence leaves: objects, background, first frame
        casts = story_casts(sentences) if keep else [None] * len(sentences)
        room = s.leave_room if leave_room is None else leave_room
        zoom = s.zoom_film if zoom_film is None else zoom_film
        first_object = first_object_caption(sentences[0]) if compose and sentences else None
        per_pass = sum(per_stage.values())
        bar = Passes(callback, per_pass, per_pass * (len(sentences) + (first_object is not None)))
        film = None  # the film's last frame
        for k, sentence in enumerate(sentences):
            held = hold(sentence, casts[k], film, zoom=zoom) if k else None  # what the sentence leaves of the film
            enters = held.enters if held is not None else None
            event = None
            if k == 0 and first_object:  # two objects: each drawn alone, the second laid on the first
                first = self._pass(first_object, None, draw, bar)
                event = self._alone(second_object_caption(sentence), lay_second(sentence, first), draw, bar)
            elif enters is not None:  # "a yellow triangle appears", or a lost object moves
                event = self._alone(held.entrance, held.enter, draw, bar)
            if event is None:
                # "the red circle moves up": from the red circle alone, the film's other objects laid back
                context = film if held is None else held.alone() if held.named.any() else held.frame
                event = self._pass(sentence, context, draw, bar, from_context=keep and k > 0 and starts_as_film(sentence))
                if keep and k and leaves_backdrop(sentence):  # the base sees the film at 32x32 and may drift to another background
                    event = keep_backdrop(event, film)
                event = event if held is None else held.apply(event)
            if room and (k == 0 or enters is not None):  # the model placed something: room for what comes next
                event = room_for(event, sentences, k, None if k == 0 else [enters.color])
            yield event
            film = event[-1]

    def _pass(self, sentence: str, context: np.ndarray | None, draw: dict, bar: Passes, from_context: bool = False) -> np.ndarray:
        """One pass of the cascade, counted on the story's bar."""
        frames = self._cascade(sentence, context, draw, bar.steps(), from_context)
        bar.passed()
        return frames

    def _alone(self, caption: str, lay: Callable[[np.ndarray], np.ndarray | None], draw: dict, bar: Passes) -> np.ndarray | None:
        """An object drawn alone from `caption` with no context, laid on the film by `lay`
        (`draw_alone`); None if it never lands."""
        return draw_alone(lambda steps: self._cascade(caption, None, draw, steps), lay, bar)

    def training_examples(self):
        """One training step of each stage (base, tsr, ssr) on its training batch (8 clips)."""
        from .data import ImagenVideoData

        examples = []
        for stage in STAGE_ORDER:
            batch = ImagenVideoData(stage, self.text_encoder, self.diffusion, batch_size=8).batch(0).to(self.device)
            model = self.stages[stage]
            examples.append((f"{stage} (U-Net, 8 clips)", model, lambda m=model, b=batch: self.diffusion.loss(m, b.x0, b.cond, cond_drop_prob=0.1)["loss"]))
        return examples
