"""The user's entry point: `kinema.load_pipeline(name or folder)`.

Every model family is driven the same way, so the CLI, the service and `kinema eval`
never know which family they hold:

    pipe = kinema.load_pipeline("phenaki-shapes")
    video = pipe("a red circle moves up at night", seed=0)          # a Video, .frames (T, H, W, 3)
    film = pipe.story(["a red circle moves up at night", "the camera zooms in"], seed=0)
    pipe.story(sentences, output="film.mp4")                          # streams, flat memory

A family implements `events()`: one uint8 (16, H, W, 3) chunk per sentence, generated
in order so that each can continue from the last. Shipped models live in
`kinema/pretrained/<name>/` as diffusers-style folders (`model_index.json` + one
subfolder per component), so a fresh install generates without downloading anything.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .io import Video, VideoWriter
from .world import EVENT_FRAMES, FPS, split_story

if TYPE_CHECKING:
    import torch

    from .text import TextEncoder

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MAX_STORY_SENTENCES = 1000
SHAPES_WORLD = "shapes-world-v1"  # what `trained_on` says of a model trained on the Shapes world

# Progress hook: called after each unit of work with (done, total).
Callback = Callable[[int, int], None]


DRAWS_ALONE = 2  # draws of an object alone (a newcomer, a second object) before a pipeline draws it another way (each costs a pass)


@dataclass
class Passes:
    """A story's progress bar, counted in sampling steps over its passes (one pass draws one
    event): `total` grows when an event takes more passes than the bar gave it."""

    callback: Callback | None
    per_pass: int
    total: int
    done: int = 0

    def steps(self) -> Callback | None:
        """The callback for the steps of the pass now drawn."""
        done = self.done
        return (lambda i, n: self.callback(done + i, self.total)) if self.callback else None

    def passed(self) -> None:
        self.done += self.per_pass
        if self.callback:  # an infill of few tokens takes fewer steps than the bar gave it
            self.callback(self.done, self.total)


def draw_alone(draw: Callable[[Callback | None], np.ndarray], lay: Callable[[np.ndarray], np.ndarray | None], bar: Passes) -> np.ndarray | None:
    """An object drawn alone (`draw(steps_callback)` -> frames [T, H, W, 3] uint8, one pass),
    as a model draws one object best, up to DRAWS_ALONE times until `lay` lands it on the film
    (frames -> the event, or None: kinema.data.continuity.lay_on); None if it never does. The
    bar gave the first draw a pass; each further draw, and the pass that draws the event
    another way after the last, adds one."""
    for attempt in range(DRAWS_ALONE):
        if attempt:
            bar.total += bar.per_pass
        frames = draw(bar.steps())
        bar.passed()
        if (event := lay(frames)) is not None:
            return event
    bar.total += bar.per_pass
    return None


def check_sentences(sentences: Sequence[str], max_sentences: int = MAX_STORY_SENTENCES) -> list[str]:
    """The sentences stripped, or one error that says what to fix: a TypeError for a str
    (not a list), a ValueError for no sentence, too many, or an empty one. Shared by every
    pipeline and the HTTP service (which allows fewer)."""
    if isinstance(sentences, str):
        raise TypeError("give a list of sentences (or use pipe.story(paragraph) to split one at full stops)")
    cleaned = [s.strip() for s in sentences]
    if not cleaned:
        raise ValueError("the story is empty: give at least one sentence")
    if len(cleaned) > max_sentences:
        raise ValueError(f"a story may have at most {max_sentences} sentences, got {len(cleaned)}")
    for number, sentence in enumerate(cleaned, start=1):
        if not sentence:
            raise ValueError(f"sentence {number} of the story is empty")
    return cleaned


Settings = TypeVar("Settings")


@dataclass
class ModelFolder:
    """A model folder read back (the other half of `Pipeline._save_folder`): what each
    family's `from_pretrained` checks and assembles."""

    path: Path
    index: dict[str, Any]
    components: dict[str, torch.nn.Module]  # every component model_index.json lists
    settings: dict[str, Any]  # scheduler/config.json; {} in a folder without one

    @classmethod
    def read(cls, folder: str | os.PathLike) -> ModelFolder:
        from . import checkpoint as ckpt

        path = Path(folder)
        index = ckpt.read_json(path / ckpt.MODEL_INDEX)
        components = {name: ckpt.load_component(path, name) for name in index.get("components", {})}
        settings = path / "scheduler" / "config.json"
        return cls(path, index, components, ckpt.read_json(settings) if settings.is_file() else {})

    def sampler(self, kind: type[Settings]) -> Settings:
        """The sampling defaults as the family's dataclass: a key the folder lacks keeps its
        default and a key the dataclass lacks is ignored, so older and newer folders load."""
        return kind(**{k: v for k, v in self.settings.items() if k in kind.__dataclass_fields__})

    def text_encoder(self) -> TextEncoder:
        from .text import get_text_encoder  # transformers loads only when a model does

        return get_text_encoder(self.index.get("text_encoder", "minilm"))


class Pipeline:
    """Base of every text-to-video pipeline: input checks, stories, streaming to files."""

    name: str = "pipeline"
    trained_on: str = SHAPES_WORLD  # a model folder's model_index.json says otherwise for real data
    fps: float = FPS
    frames_per_event: int = EVENT_FRAMES

    # ---- what a family implements
    def events(self, sentences: Sequence[str], *, seed: int, callback: Callback | None = None, **options) -> Iterator[np.ndarray]:
        """Yield one uint8 (frames_per_event, H, W, 3) chunk per sentence, in order."""
        raise NotImplementedError

    def training_examples(self) -> list[tuple[str, torch.nn.Module, Callable[[], torch.Tensor]]]:
        """(name, module, loss()) per trained component, on a realistic batch, for
        `kinema bench` to time one training step of each. Nothing to train: []."""
        return []

    # ---- what every family shares
    def _autocast(self):
        """bf16 autocast where `self.device` runs bf16 natively, else fp32 (precision.py)."""
        from .precision import autocast

        return autocast(self.device)

    def _save_folder(self, folder: str | os.PathLike, components: dict, sampler, extra: dict | None, dtype) -> Path:
        """A diffusers-style model folder: model_index.json naming this pipeline class, a
        subfolder per component, and the sampling defaults as scheduler/config.json."""
        from dataclasses import asdict

        from . import checkpoint as ckpt

        # "minilm" for the bundled encoder, else its folder's path: what get_text_encoder reads back
        index = {"_class_name": type(self).__name__, "text_encoder": self.text_encoder.source, **(extra or {})}
        scheduler = {"scheduler/config.json": json.dumps(asdict(sampler), indent=2) + "\n"}
        return ckpt.save_pretrained(folder, components, index_extra=index, dtype=dtype, extra_files=scheduler)

    def check_inputs(self, sentences: Sequence[str]) -> list[str]:
        """One clear error for input no model can use; sentences are stripped."""
        return check_sentences(sentences, MAX_STORY_SENTENCES)

    @staticmethod
    def check_sampling(num_inference_steps: int | None, guidance_scale: float | None) -> None:
        """Range checks shared by every sampler; None means the model's default."""
        if num_inference_steps is not None and not 1 <= num_inference_steps <= 1000:
            raise ValueError(f"num_inference_steps must be between 1 and 1000, got {num_inference_steps}")
        if guidance_scale is not None and not 0 <= guidance_scale <= 30:
            raise ValueError(f"guidance_scale must be between 0 and 30, got {guidance_scale}")

    def warn_outside_world(self, sentences: Sequence[str]) -> None:
        """A model trained on the Shapes world still generates for any sentence, but says
        when a sentence uses words the world does not have."""
        from .world import ParseError, parse

        for s in sentences:
            try:
                parse(s)
            except ParseError as e:
                warnings.warn(f"the model was trained on the Shapes world and may not follow this: {e}", stacklevel=3)

    def __call__(
        self,
        prompt: str,
        *,
        num_frames: int | None = None,
        seed: int = 0,
        output: str | os.PathLike | None = None,
        callback: Callback | None = None,
        **options,
    ) -> Video | Path:
        """One prompt → a Video. `num_frames` must be a whole number of events
        (`frames_per_event`, 16 frames); a longer clip continues the same prompt event after
        event. With `output`, frames stream to that file and the path is returned."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        num_frames = self.frames_per_event if num_frames is None else num_frames
        if num_frames <= 0 or num_frames % self.frames_per_event:
            raise ValueError(f"num_frames must be a positive multiple of {self.frames_per_event} (one event), got {num_frames}")
        return self.story([prompt] * (num_frames // self.frames_per_event), seed=seed, output=output, callback=callback, **options)

    def story(
        self,
        sentences: Sequence[str] | str,
        *,
        seed: int = 0,
        output: str | os.PathLike | None = None,
        callback: Callback | None = None,
        **options,
    ) -> Video | Path:
        """A list of sentences (or one paragraph, split at full stops) → one unbroken film.

        With `output`, frames stream to that file as they are made (memory stays flat
        however long the story) and the path is returned; else the Video is."""
        if isinstance(sentences, str):
            sentences = split_story(sentences)
        sentences = self.check_inputs(sentences)
        self.check_sampling(options.get("num_inference_steps"), options.get("guidance_scale"))
        if self.trained_on == SHAPES_WORLD and self.name != WorldPipeline.name:  # the world refuses what it cannot act out
            self.warn_outside_world(sentences)
        chunks = self.events(sentences, seed=seed, callback=callback, **options)
        if output is None:
            return Video(np.concatenate(list(chunks)), fps=self.fps)
        with VideoWriter(output, fps=self.fps) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return Path(output)


class WorldPipeline(Pipeline):
    """The Shapes world's own renderer behind the pipeline interface: the ground truth,
    the upper bound every model is scored against (`kinema eval world`)."""

    name = "world"

    def __init__(self, size: int = 64) -> None:
        self.size = size

    def __call__(
        self, prompt: str, *, num_frames: int | None = None, seed: int = 0, output: str | os.PathLike | None = None, callback: Callback | None = None, **options
    ) -> Video | Path:
        if num_frames not in (None, self.frames_per_event):
            raise ValueError(f"the world renders a caption as one event of {self.frames_per_event} frames; use a story for more")
        return super().__call__(prompt, num_frames=num_frames, seed=seed, output=output, callback=callback, **options)

    def events(self, sentences: Sequence[str], *, seed: int, callback: Callback | None = None, **options) -> Iterator[np.ndarray]:
        from .world import parse, plan_story, render_event

        plan = plan_story([parse(s) for s in sentences], seed=seed)
        for i, event in enumerate(plan):
            yield render_event(event, self.size)
            if callback:
                callback(i + 1, len(plan))


# name -> pipeline class, for folders whose model_index.json names it. Never imports code
# named by a checkpoint: only classes registered here can be built.
PIPELINE_CLASSES: dict[str, type[Pipeline]] = {}


def register_pipeline(cls: type[Pipeline]) -> type[Pipeline]:
    PIPELINE_CLASSES[cls.__name__] = cls
    return cls


def available_models() -> list[str]:
    """Names `load_pipeline` accepts: the world, and every model shipped with this install."""
    shipped = sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model_index.json").is_file()) if PRETRAINED_DIR.is_dir() else []
    return ["world", *shipped]


def load_pipeline(name_or_path: str | os.PathLike = "world", **kwargs) -> Pipeline:
    """A shipped model by name (`kinema info` lists them), "world", or a model folder."""
    if str(name_or_path) == "world":
        return WorldPipeline(**kwargs)
    folder = Path(name_or_path)
    if not folder.is_dir():
        shipped = PRETRAINED_DIR / str(name_or_path)
        if not shipped.is_dir():
            raise ValueError(f"unknown model {str(name_or_path)!r}; known models: {', '.join(available_models())} (or a model folder)")
        folder = shipped
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{folder} is not a model folder: it has no model_index.json")
    try:
        index = json.loads(index_path.read_text())
        class_name = index["_class_name"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{index_path} is corrupt: expected JSON with a '_class_name'") from None
    _import_families()
    if class_name not in PIPELINE_CLASSES:
        raise ValueError(f"{index_path} names an unknown pipeline {class_name!r}; known: {', '.join(sorted(PIPELINE_CLASSES))}")
    pipe = PIPELINE_CLASSES[class_name].from_pretrained(folder, **kwargs)
    pipe.trained_on = str(index.get("trained_on", SHAPES_WORLD))
    return pipe


def _import_families() -> None:
    """Import the model families so their pipelines register themselves."""
    import importlib

    for module in ("kinema.models.phenaki.pipeline", "kinema.models.imagen_video.pipeline"):
        importlib.import_module(module)
