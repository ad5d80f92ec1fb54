"""PhenakiPipeline: text → MaskGIT tokens → C-ViViT frames, sentence after sentence.

Each sentence is one 16-frame event. The first is generated from its text alone; every
later one is conditioned on the token grid of the last frame made so far, re-encoded by
C-ViViT as an image, so the film continues without a cut and carries its state (a zoom
stays zoomed). Only that one frame is carried, so memory does not grow with the story; in
the Shapes world one frame is the whole state (an object keeps still unless a sentence
moves it), where footage with ongoing motion would want the paper's few last frames.

A caption that names two objects is drawn one object at a time (`compose_objects`): this
MaskGIT reads *what* a two-object caption names but not *which* object each word belongs
to, and draws both with a shape between theirs (its card's HISTORY.md), while it draws one
object right nearly every time. So each object's clause is drawn alone (the caption's own
words with the other clause cut out, `first_object_caption`, `second_object_caption`), and
the second object is laid on the first one's clip frame by frame (`lay_on`), its path moved
by the least shift that keeps the world's gap between them: drawn alone, both land where
the model likes to draw one object. If neither of its two draws lands (missing from a
frame, or no shift clears it), the rest of the event is infilled around the first object's
tokens instead, under the caption with the first object's shape word made the second's
(`infill_caption`: the infill reads the caption as a bag of words too), and the first
object's pixels as drawn alone are pasted back (the C-ViViT's decoder looks across the
whole clip and would redraw them among their new neighbours).

In a story only what a sentence changes changes (`hold_objects`, kinema.data.continuity):
"the red circle moves up" is drawn from a context frame with the film's other objects
painted out, the red circle alone as the MaskGIT draws one object best (the event's first
frame kept as that frame, so the circle starts where the film left it), and the others are
laid back as the film's last frame has them; "a yellow triangle appears" is drawn alone, as a
first scene ("a yellow triangle stays still in the desert"; again if it goes missing or
wanders), and laid on the film at the nearest free place, as is an object a sentence moves
that the film has lost (drawn with its motion, the film's faults painted out); after "the
scene changes to the desert" the film's objects are lifted off the old background onto the
new one the MaskGIT drew. A square the MaskGIT would redraw a little rounder each event
stays as it was drawn. An object keeps one shape (`rigid_objects`): drawn from text, one
that moves, bounces or stays still is one steady drawing of it (the median of the MaskGIT's
drawings, `steadied`) laid along the path drawn, and one that grows or shrinks one steady
drawing scaled as the MaskGIT draws it grow; in a story, a sentence that moves an object
moves the film's own along the path the MaskGIT draws for it, one that grows or shrinks it
scales the film's own as the MaskGIT draws it, and one that makes it disappear shrinks the
film's own to nothing over the event; a zoom scales the film's last frame as the MaskGIT's
zoom scales its objects (`zoomed`). What a first scene or a newcomer placed is moved where
the world can act out the next sentences from (`leave_room`, kinema.data.room): an object
drawn at the edge is not sent out of the frame by the next sentence.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ... import checkpoint as ckpt
from ...data.continuity import Hold, hold, lay_second, rim, shape_caption, steadied, story_casts
from ...data.grounding import first_object_caption, infill_caption, second_object_caption
from ...data.room import room_for
from ...data.shapes import to_model_range, to_uint8_frames
from ...nn.attention import trim_padding
from ...nn.weighting import foreground_mask
from ...pipelines import Callback, ModelFolder, Passes, Pipeline, draw_alone, register_pipeline
from ...precision import default_device
from ...tokenizer.cvivit import CViViT
from .data import token_cover
from .maskgit import MaskGit

if TYPE_CHECKING:
    from ...text import TextEncoder


@dataclass
class PhenakiSampler:
    """Sampling defaults, saved as the model folder's scheduler/config.json."""

    num_inference_steps: int = 12
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    choice_temperature: float | None = None  # noise on which tokens are kept; None = temperature
    refine_rounds: int = 0  # then re-mask the least likely tokens given the rest and redraw them (MaskGit.refine)
    refine_share: float = 0.2
    refine_steps: int = 4
    compose_objects: bool = True  # a caption naming two objects: each object drawn alone, the second laid on the first
    hold_objects: bool = True  # a story event keeps what its sentence leaves as the film has it (kinema.data.continuity)
    leave_room: bool = True  # a story's first scene or newcomer is moved where the next sentences can be acted out from it (kinema.data.room)
    rigid_objects: bool = True  # an object that moves, bounces or stays still keeps one shape: its drawings' median, in a story the film's (scaled as it grows or shrinks, shrunk to nothing as it disappears); a zoom scales the film (kinema.data.continuity)


def check_draw(*, temperature: float, top_k: int | None, choice_temperature: float | None, refine_rounds: int, refine_share: float) -> None:
    """One line for a sampling setting MaskGIT cannot use, from a call or a folder's
    scheduler/config.json, before any work."""
    if temperature < 0:
        raise ValueError(f"temperature must be at least 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 (or None for no cut), got {top_k}")
    if choice_temperature is not None and choice_temperature < 0:
        raise ValueError(f"choice_temperature must be at least 0, got {choice_temperature}")
    if refine_rounds < 0:
        raise ValueError(f"refine_rounds must be at least 0, got {refine_rounds}")
    if not 0 <= refine_share <= 1:
        raise ValueError(f"refine_share must be between 0 and 1, got {refine_share}")


@register_pipeline
class PhenakiPipeline(Pipeline):
    name = "phenaki"

    def __init__(self, tokenizer: CViViT, transformer: MaskGit, text_encoder: TextEncoder, sampler: PhenakiSampler | None = None, device: str | torch.device = "cpu"):
        self.tokenizer = tokenizer.eval().to(device)
        self.transformer = transformer.eval().to(device)
        self.text_encoder = text_encoder
        self.sampler = sampler or PhenakiSampler()
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device | None = None) -> PhenakiPipeline:
        model = ModelFolder.read(folder)
        tokenizer, transformer = model.components.get("tokenizer"), model.components.get("transformer")
        if not isinstance(tokenizer, CViViT) or not isinstance(transformer, MaskGit):
            raise ckpt.CheckpointError(f"{folder}: expected a CViViT tokenizer and a MaskGit transformer")
        tok, mg = tokenizer.config, transformer.config
        if tuple(tok.fsq_levels) != tuple(mg.fsq_levels):
            raise ckpt.CheckpointError(f"{folder}: the transformer was trained on FSQ levels {mg.fsq_levels}, the tokenizer has {tok.fsq_levels}")
        layout = (tok.grid_size, tok.token_frames(cls.frames_per_event), 1)  # the context: one grid, the film's last frame
        if (mg.grid, mg.event_grids, mg.context_grids) != layout:
            raise ckpt.CheckpointError(f"{folder}: the transformer's token layout (grid {mg.grid}, {mg.event_grids} grids an event, {mg.context_grids} of context) does not fit the tokenizer's (grid {layout[0]}, {layout[1]} grids an event, 1 of context)")
        return cls(tokenizer, transformer, model.text_encoder(), model.sampler(PhenakiSampler), device or default_device())

    def save_pretrained(self, folder: str | os.PathLike, extra: dict | None = None, dtype: torch.dtype | None = torch.bfloat16) -> Path:
        """Write the model folder; weights in bf16 by default (half the size, loaded back as fp32)."""
        return self._save_folder(folder, {"tokenizer": self.tokenizer, "transformer": self.transformer}, self.sampler, extra, dtype)

    @torch.inference_mode()
    def events(
        self,
        sentences: Sequence[str],
        *,
        seed: int = 0,
        callback: Callback | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        choice_temperature: float | None = None,
        refine_rounds: int | None = None,
        compose_objects: bool | None = None,
        hold_objects: bool | None = None,
        leave_room: bool | None = None,
        rigid_objects: bool | None = None,
    ) -> Iterator[np.ndarray]:
        s = self.sampler
        steps = s.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = s.guidance_scale if guidance_scale is None else guidance_scale
        rounds = s.refine_rounds if refine_rounds is None else refine_rounds
        temperature = s.temperature if temperature is None else temperature
        top_k = s.top_k if top_k is None else top_k
        choice_temperature = s.choice_temperature if choice_temperature is None else choice_temperature
        compose = s.compose_objects if compose_objects is None else compose_objects
        casts = story_casts(sentences) if (s.hold_objects if hold_objects is None else hold_objects) else [None] * len(sentences)
        room = s.leave_room if leave_room is None else leave_room
        rigid = s.rigid_objects if rigid_objects is None else rigid_objects
        check_draw(temperature=temperature, top_k=top_k, choice_temperature=choice_temperature, refine_rounds=rounds, refine_share=s.refine_share)
        generator = torch.Generator(self.device).manual_seed(seed)
        draw = dict(
            steps=steps, guidance_scale=guidance, temperature=temperature, top_k=top_k, choice_temperature=choice_temperature,
            refine_rounds=rounds, refine_share=s.refine_share, refine_steps=s.refine_steps, generator=generator,
        )
        context = None
        per_event = steps + rounds * s.refine_steps
        # the first event's pass for its first object, where it has one; the bar counts every pass
        first_object = first_object_caption(sentences[0]) if compose and sentences else None
        bar = Passes(callback, per_event, per_event * (len(sentences) + (first_object is not None)))
        for k, sentence in enumerate(sentences):
            held = hold(sentence, casts[k], frames[-1], rigid, zoom=rigid) if k else None  # what the sentence leaves of the film
            enters = held.enters if held is not None else None
            if k == 0 and first_object:
                frames = self._compose(sentence, first_object, draw, bar, rigid)
            else:  # "a yellow triangle appears", or an object the film lost moves: drawn alone and laid on the film, if it lands
                entered = self._alone(held.entrance, held.enter, draw, bar, rigid) if enters is not None else None
                if entered is not None:
                    frames = entered
                elif k == 0:  # a first scene of one object
                    frames = self._drawn(sentence, draw, bar.steps(), rigid)
                    bar.passed()
                else:
                    frames = self._event(sentence, held, context, draw, bar)
            if room and (k == 0 or enters is not None):  # the model placed something: room for what comes next
                frames = room_for(frames, sentences, k, None if k == 0 else [enters.color])
            yield frames
            if k + 1 < len(sentences):  # the next event starts from the codes of this one's last frame, as drawn
                context = self._encode_frame(frames[-1])

    def _event(self, sentence: str, held: Hold | None, context, draw: dict, bar: Passes) -> np.ndarray:
        """One event's frames [T, H, W, 3] uint8, drawn from the film's last frame (`context`)
        with what `held` keeps of it."""
        codes = keep = None
        if held is not None and held.named.any():  # "the red circle moves up": from the red circle alone
            context = self._encode_frame(held.alone())
            codes, keep = self._starting_at(context)
        elif held is not None and not held.new_backdrop and not held.zoom:  # no named object in the film, or a newcomer never laid on: around the rest
            codes, keep = self._held_tokens(held)
        codes = self._draw(sentence, context, codes, keep, draw, bar.steps())
        bar.passed()
        frames = to_uint8_frames(self._decode(codes)[0])
        return frames if held is None else held.apply(frames)

    def _compose(self, sentence: str, first_object: str, draw: dict, bar: Passes, rigid: bool) -> np.ndarray:
        """A caption that names two objects, one object at a time: the first object's clause
        drawn alone, then the second's alone and laid on it, moved clear of the first
        (`lay_on`), or, if it never lands, the rest infilled around the first object's tokens
        with its pixels as drawn alone pasted back. With `rigid`, each object drawn alone is
        one steady drawing of it along its path (`steadied`)."""
        codes = self._draw(shape_caption(first_object) if rigid else first_object, None, None, None, draw, bar.steps())
        video = self._decode(codes)
        bar.passed()
        first = to_uint8_frames(video[0])
        first = steadied(first, first_object) if rigid else first
        frames = self._alone(second_object_caption(sentence), lay_second(sentence, first), draw, bar, rigid)
        if frames is not None:
            return frames
        if rigid:  # the infill keeps the steady drawing's tokens
            video = to_model_range(first)[None].to(self.device)
            codes = self._encode(video)
        drawn = self._objects(video)
        codes = self._draw(infill_caption(sentence), None, codes, self._object_tokens(drawn), draw, bar.steps())
        # the decoder looks across the whole clip and would redraw the kept object among its
        # new neighbours (a square's corners rounded): its pixels as drawn stay
        video = torch.where(drawn, video, self._decode(codes))
        bar.passed()
        return to_uint8_frames(video[0])

    def _alone(self, caption: str, lay: Callable[[np.ndarray], np.ndarray | None], draw: dict, bar: Passes, rigid: bool) -> np.ndarray | None:
        """An object drawn alone from `caption` (`_drawn`), laid on the film by `lay`
        (`draw_alone`); None if it never lands."""
        return draw_alone(lambda steps: self._drawn(caption, draw, steps, rigid), lay, bar)

    def _drawn(self, caption: str, draw: dict, steps, rigid: bool) -> np.ndarray:
        """An event's frames [T, H, W, 3] uint8 drawn from `caption` alone, with no context;
        with `rigid`, each rigid object one steady drawing of it (drawn from `shape_caption`,
        `steadied`)."""
        frames = to_uint8_frames(self._decode(self._draw(shape_caption(caption) if rigid else caption, None, None, None, draw, steps))[0])
        return steadied(frames, caption) if rigid else frames

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        """[1, N] codes of `video` [1, 3, T, H, W]."""
        with self._autocast():
            return self.tokenizer.encode(video).flatten(1)

    def _encode_frame(self, frame: np.ndarray) -> torch.Tensor:
        """[1, grid²] codes of one uint8 frame [H, W, 3]: a story's context."""
        return self._encode(to_model_range(frame[None])[None].to(self.device))

    def _starting_at(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [1, N] whose first grid is `context` [1, grid²] and which of them to keep (that
        grid): the event's first frame is the film's last, C-ViViT coding a clip's first frame
        alone, so the object a sentence moves starts where the film left it."""
        codes = torch.zeros(1, self.transformer.config.event_tokens, dtype=context.dtype, device=context.device)
        keep = torch.zeros_like(codes, dtype=torch.bool)
        codes[:, : context.shape[1]], keep[:, : context.shape[1]] = context, True
        return codes, keep

    def _held_tokens(self, held: Hold) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes of the film's last frame held still for an event, and which of them to
        keep [1, N] each: the tokens the held objects touch."""
        still = to_model_range(np.repeat(held.frame[None], self.frames_per_event, axis=0))[None].to(self.device)
        objects = torch.from_numpy(rim(held.held)).to(self.device).expand_as(still[:, :1])
        return self._encode(still), self._object_tokens(objects)

    def _draw(self, sentence: str, context, codes, keep, draw: dict, callback) -> torch.Tensor:
        """One event's codes [1, N] for `sentence`; with `codes` and `keep` [1, N], only the
        tokens not kept are drawn."""
        text = self.text_encoder.encode([sentence], device=self.device)
        tokens, mask = trim_padding(text.tokens, text.mask)
        with self._autocast():
            return self.transformer.generate(tokens, mask, context, codes=codes, masked=None if keep is None else ~keep, callback=callback, **draw)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        grid = self.transformer.config.grid
        with self._autocast():
            return self.tokenizer.decode_from_indices(codes.reshape(1, -1, grid, grid))

    @staticmethod
    def _objects(video: torch.Tensor) -> torch.Tensor:
        """[1, 1, T, H, W] bool: the pixels of the objects in `video` (far from their frame's
        median colour) and their rims."""
        return foreground_mask(video.float(), rim=True) > 0

    def _object_tokens(self, objects: torch.Tensor) -> torch.Tensor:
        """[1, N] bool: the tokens of an event whose patch `objects` (`_objects`) touches in any
        of its frames."""
        c = self.tokenizer.config
        return token_cover(objects[:, 0], c.grid_size, c.temporal_patch, least=1).flatten(1)

    def training_examples(self):
        """One step of each component at its training batch size (8 clips / 16 events)."""
        from ...data.shapes import ShapesVideoDataset

        clips = ShapesVideoDataset(batch_size=8).batch(0).video.to(self.device)
        c = self.transformer.config
        captions = ["a red circle moves to the right on a black background"] * 16
        text = self.text_encoder.encode(captions, device=self.device)
        tokens, mask = trim_padding(text.tokens, text.mask)
        codes = torch.randint(0, self.tokenizer.config.codebook_size, (16, c.event_tokens), device=self.device)
        context = torch.randint(0, self.tokenizer.config.codebook_size, (16, c.context_tokens), device=self.device)
        return [
            ("tokenizer (C-ViViT, 8 clips)", self.tokenizer, lambda: self.tokenizer(clips)[1]["loss"]),
            ("transformer (MaskGIT, 16 events)", self.transformer, lambda: self.transformer.loss(codes, tokens, mask, context)["loss"]),
        ]
