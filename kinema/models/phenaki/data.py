"""MaskGIT's training data: Shapes-world events as C-ViViT tokens, with their captions.

Half the examples are single events (a scene caption, no context); half are a story's
step: the token grid of the previous event's last frame as context, the next event's
tokens as target, and the story sentence as caption. Captions are canonical or *train*
paraphrases, never held-out ones. Micro-batch i of rank r comes from the generator
seeded [seed, r, i], so the data position is just a counter (exact resume).

Encoding the clips costs a third of a MaskGIT step on a CPU. With `reuse` = K, batch i is
batch i mod K, tokenized once and then kept in memory (codes and captions: a few MB), so
a long run cycles over K batches at the cost of K encodings. A resumed run re-encodes
lazily and sees the same data.

On a GPU the work splits in two: `clips(i)` renders the events and writes the captions
(CPU work, done ahead by the trainer's data workers) and `tokens(clips)` runs the frozen
C-ViViT and the text encoder where the clips are, on the GPU, where they take milliseconds
instead of a worker's second (the text encoder alone took more of a worker's time than the
rendering). `batch(i)` is the two in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import reduce

from ...batch import Batch
from ...data.grounding import object_words, swapped_caption
from ...data.shapes import captioned_example, to_model_range, to_uint8_frames
from ...nn.weighting import foreground_mask
from ...precision import autocast
from ...tokenizer.cvivit import CViViT
from ...world.judge import color_pixels

if TYPE_CHECKING:
    from ...text import TextEncoder


@dataclass
class TokenBatch(Batch):
    codes: torch.Tensor  # [B, N] event token codes
    context: torch.Tensor  # [B, M] context grid codes (where has_context is False: the event's own first frame, ignored)
    has_context: torch.Tensor  # [B] bool
    text: torch.Tensor  # [B, L, D]
    text_mask: torch.Tensor  # [B, L]
    captions: list[str]
    foreground: torch.Tensor  # [B, N] bool: the event token's patch shows an object (foreground_tokens)
    grounding: Grounding | None = None  # which words name which object's tokens (Shapes world only)
    negatives: Negatives | None = None  # the captions with two objects' attributes swapped (Shapes world only)


@dataclass
class Grounding(Batch):
    """Targets for `kinema.nn.grounding`: up to `MAX_OBJECTS` named objects per example."""

    tokens: torch.Tensor  # [B, K, N] bool: the event tokens object k shows in (object_tokens)
    words: torch.Tensor  # [B, K, L] bool: the caption's text tokens that describe object k


@dataclass
class Negatives(Batch):
    """Hard negative captions for `MaskGit.loss`: each two-object caption with its objects'
    shapes or motions swapped (`kinema.data.grounding.swapped_caption`)."""

    text: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L]
    rows: torch.Tensor  # [B] bool: the example has a negative (elsewhere text is its own caption's)


MAX_OBJECTS = 2  # a Shapes-world scene holds at most two


FOREGROUND_PIXELS = 6  # a token shows an object when, in one of its frames, this many of its patch's pixels are foreground


def token_cover(pixels: torch.Tensor, grid: int, temporal_patch: int, least: int = FOREGROUND_PIXELS) -> torch.Tensor:
    """[..., T', grid, grid] bool, token for token as C-ViViT codes a clip: True where the
    token's patch has at least `least` of `pixels` [..., T, H, W] in one of its frames."""
    counts = reduce(pixels.float(), "... t (h p) (w q) -> ... t h w", "sum", h=grid, w=grid)
    first = counts[..., :1, :, :]
    rest = reduce(counts[..., 1:, :, :], "... (g k) h w -> ... g h w", "max", k=temporal_patch)
    return torch.cat([first, rest], dim=-3) >= least


def foreground_tokens(video: torch.Tensor, grid: int, temporal_patch: int, *, rim: bool = False, least: int = FOREGROUND_PIXELS) -> torch.Tensor:
    """[B, T', grid, grid] bool: the tokens of `video` [B, 3, T, H, W] whose patch shows
    foreground (kinema.nn.weighting). By default a star (at most 2x2 pixels, zoomed) stays
    below the bar and an object's edge (objects are at least 7 pixels across) does not; with
    `rim` and `least` = 1, every token an object touches, its edge included."""
    return token_cover(foreground_mask(video.float(), rim=rim)[:, 0], grid, temporal_patch, least)


@dataclass
class ClipBatch(Batch):
    """Events and captions before encoding: what a data worker hands to the training device.
    Frames stay uint8 until they are there: a quarter of the bytes through shared memory."""

    frames: torch.Tensor  # [B, 16, H, W, 3] uint8
    context_frames: torch.Tensor  # [B, 1, H, W, 3] uint8: the frame a story step continues from (the event's own first frame otherwise)
    has_context: torch.Tensor  # [B] bool
    captions: list[str]
    grounding: Grounding | None = None
    swapped: list[str | None] | None = None  # each caption with two objects' attributes swapped, if it has two (Negatives)

    @property
    def events(self) -> torch.Tensor:
        """[B, 3, 16, H, W] in [-1, 1], where the frames are."""
        return to_model_range(self.frames)

    @property
    def contexts(self) -> torch.Tensor:
        """[B, 3, 1, H, W] in [-1, 1]."""
        return to_model_range(self.context_frames)


@dataclass
class PhenakiData:
    tokenizer: CViViT
    text_encoder: TextEncoder
    batch_size: int = 16
    seed: int = 0
    rank: int = 0
    story_share: float = 0.5  # share of examples that continue a story from a context frame
    max_story: int = 6  # story steps are drawn from stories up to this long (zoom states etc.)
    scene_mix: dict[str, float] | None = None  # weights of the single-scene kinds (kinema.data.shapes.parse_scene_mix)
    source: Any = None  # a real captioned-video dataset (kinema.data.load_dataset); None = the Shapes world
    reuse: int = 0  # > 0: cycle over this many distinct batches, each encoded once (0 = endless)
    grounding: bool = False  # also give each example's Grounding (kinema.nn.grounding; Shapes world only)
    negatives: bool = False  # also give swapped-attribute negative captions (Negatives; Shapes world only)

    def __post_init__(self):
        self._cache: dict[int, TokenBatch] = {}

    def batch(self, index: int) -> TokenBatch:
        """Micro-batch `index`, tokenized here (on the CPU, or from the `reuse` cache)."""
        if not self.reuse:
            return self.tokens(self.clips(index))
        index %= self.reuse
        if index not in self._cache:
            self._cache[index] = replace(self.tokens(self.clips(index)), text=None, text_mask=None)
        cached = self._cache[index]
        text = self.text_encoder.encode(cached.captions)  # its own cache: the embeddings are not kept twice
        return replace(cached, text=text.tokens, text_mask=text.mask)

    def clips(self, index: int) -> ClipBatch:
        """Micro-batch `index` as pixels and captions (CPU work)."""
        if self.source is not None:  # real footage: single clips, no story context
            real = self.source.batch(index)
            frames, captions = torch.from_numpy(to_uint8_frames(real.video)), list(real.captions)
            has_context = torch.zeros(len(captions), dtype=torch.bool)
            return ClipBatch(frames, frames[:, :1], has_context, captions)
        rng = np.random.default_rng([self.seed, self.rank, index])
        examples = [captioned_example(rng, self.story_share, self.max_story, self.scene_mix) for _ in range(self.batch_size)]
        frames = torch.from_numpy(np.stack([e for e, _, _ in examples]))
        captions = [c for _, _, c in examples]
        has_context = torch.tensor([c is not None for _, c, _ in examples])
        context_frames = torch.from_numpy(np.stack([c if c is not None else e[:1] for e, c, _ in examples]))
        grounding = self.ground([e for e, _, _ in examples], captions, self.text_encoder.max_length) if self.grounding else None
        swapped = self.swapped_captions(captions, np.random.default_rng([self.seed, self.rank, index, 1])) if self.negatives else None
        return ClipBatch(frames, context_frames, has_context, captions, grounding, swapped)

    @staticmethod
    def swapped_captions(captions: list[str], rng: np.random.Generator) -> list[str | None]:
        """Each two-object caption with its objects' shapes (or motions; which one is tried
        first is drawn) swapped; None for a caption with no such swap."""
        swapped = []
        for caption in captions:
            order = ("shape", "motion") if rng.random() < 0.5 else ("motion", "shape")
            swapped.append(next((s for s in (swapped_caption(caption, a) for a in order) if s is not None), None))
        return swapped

    def ground(self, events: list[np.ndarray], captions: list[str], length: int) -> Grounding:
        """Each caption's named objects (at most MAX_OBJECTS): their event tokens, from the
        pixels of their colour, and their words' text tokens."""
        c = self.tokenizer.config
        tokens = torch.zeros(len(events), MAX_OBJECTS, c.token_frames(len(events[0])) * c.grid_size**2, dtype=torch.bool)
        words = torch.zeros(len(events), MAX_OBJECTS, length, dtype=torch.bool)
        for i, (frames, caption) in enumerate(zip(events, captions)):
            named = list(object_words(caption).items())[:MAX_OBJECTS]
            if not named:
                continue
            pixels = torch.from_numpy(color_pixels(frames, [color for color, _ in named]))
            tokens[i, : len(named)] = token_cover(pixels, c.grid_size, c.temporal_patch).flatten(1)
            for k, (_, spans) in enumerate(named):
                words[i, k, self.text_encoder.token_positions(caption, spans)] = True
        return Grounding(tokens, words)

    @torch.no_grad()
    def tokens(self, clips: ClipBatch) -> TokenBatch:
        """`clips` as C-ViViT codes and caption embeddings, on the device the clips are on
        (the tokenizer and the text encoder run there)."""
        device, events = clips.frames.device, clips.events
        self.tokenizer.to(device)
        with autocast(device):
            codes = self.tokenizer.encode(events).flatten(1)
            context = self.tokenizer.encode(clips.contexts).flatten(1)
        c = self.tokenizer.config
        foreground = foreground_tokens(events, c.grid_size, c.temporal_patch).flatten(1)
        encoder = self.text_encoder.to(device)
        text = encoder.encode(clips.captions, device=device)
        negatives = None
        if clips.swapped is not None:  # a caption with no swap stands in for itself, unmarked
            swapped = encoder.encode([s if s is not None else caption for s, caption in zip(clips.swapped, clips.captions)], device=device)
            negatives = Negatives(swapped.tokens, swapped.mask, torch.tensor([s is not None for s in clips.swapped], device=device))
        return TokenBatch(codes, context, clips.has_context, text.tokens, text.mask, clips.captions, foreground, clips.grounding, negatives)
