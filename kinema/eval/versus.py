"""`kinema bench MODEL --vs phenaki-pytorch`: kinema's Phenaki against lucidrains'
phenaki-pytorch built to the same size, timed in the same process on the same inputs.

The competitor is built from the kinema pipeline's own configs: C-ViViT width, depth, heads,
head width, token grid (their patch size = our total downsampling), frames per space-time
patch and code count; MaskGIT width, depth, heads, head width, feed-forward width, text
width and tokens per event; the same number of sampling steps and guidance scale; the same
batches; both in the same precision (bf16 autocast where the hardware has it). Where the
two designs cannot match (their LFQ against our FSQ, their 65 536-way softmax against our
per-digit heads, no context slot, their linear patches against our conv stacks) the report
says so in note rows. Their text encoder (T5) is swapped for kinema's own token embeddings
of the same width, so nothing downloads and both sides pay the same text cost.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import statistics
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..precision import autocast, resolve
from .bench import seconds_of, time_training_step

if TYPE_CHECKING:
    from ..models.phenaki.pipeline import PhenakiPipeline
    from ..pipelines import Pipeline

COMPETITORS = ("phenaki-pytorch",)
PHENAKI_PYTORCH_VERSION = "0.5.0"
# --no-deps: its declared torchvision cannot import beside the CPU torch, and once installed it
# breaks transformers' model imports (kinema's text encoder); its trainers' accelerate and
# OpenCV are not needed to build and time the models. beartype (the `vs` extra) is what its
# model code needs. No brackets: the CLI prints messages as rich markup.
INSTALL = f"pip install beartype && pip install --no-deps phenaki-pytorch=={PHENAKI_PYTORCH_VERSION}"
TOKENIZER_BATCH = 8  # clips per tokenizer step, as PhenakiPipeline.training_examples
TRANSFORMER_BATCH = 16  # events per MaskGIT step, as PhenakiPipeline.training_examples
PROMPT = "a red circle moves to the right on a black background"
_TEXT_NAME = "kinema-text-encoder"  # the name their T5 helpers know kinema's encoder by


class VersusError(ValueError):
    """A comparison that cannot run as asked; the message says what to do."""


def available(competitor: str = "phenaki-pytorch") -> bool:
    return competitor == "phenaki-pytorch" and all(importlib.util.find_spec(m) is not None for m in ("phenaki_pytorch", "beartype"))


def check_competitor(competitor: str) -> None:
    """Fail in one line, before any timing, on an unknown name or a missing extra."""
    if competitor not in COMPETITORS:
        raise VersusError(f"unknown --vs {competitor!r}; choose from: {', '.join(COMPETITORS)}")
    if not available(competitor):
        raise VersusError(f"--vs {competitor} needs lucidrains' phenaki-pytorch (the vs extra), which is not installed: {INSTALL}")


def check_pipeline(pipe: Pipeline, competitor: str) -> None:
    from ..models.phenaki.pipeline import PhenakiPipeline

    if not isinstance(pipe, PhenakiPipeline):
        raise VersusError(f"--vs {competitor} compares Phenaki models; this model is a {pipe.name!r} pipeline")


class _Unavailable(types.ModuleType):
    """Stands in for torchvision while phenaki-pytorch's modules load (see `_phenaki_pytorch`)."""

    def __getattr__(self, attr: str):
        raise AttributeError(f"{self.__name__} is not importable beside this torch; kinema builds phenaki-pytorch's C-ViViT without its VGG loss")


def _phenaki_pytorch() -> types.ModuleType:
    """Their model module, `phenaki_pytorch.phenaki_pytorch`, loaded without the package's
    `__init__` and without torchvision.

    The `__init__` imports their trainers (accelerate, OpenCV, torchvision), and their C-ViViT
    module imports torchvision only for a VGG perceptual loss whose weights it downloads; the
    comparison builds C-ViViT with `use_vgg_and_gan=False`, so a placeholder stands in for
    torchvision while the modules load, and any use of it fails loudly."""
    name = "phenaki_pytorch"
    if f"{name}.phenaki_pytorch" in sys.modules:
        return sys.modules[f"{name}.phenaki_pytorch"]
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise VersusError(f"--vs phenaki-pytorch needs lucidrains' phenaki-pytorch (the vs extra), which is not installed: {INSTALL}")
        sys.modules[name] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    placeholder = "torchvision" not in sys.modules
    if placeholder:
        sys.modules["torchvision"] = _Unavailable("torchvision")
    try:
        with warnings.catch_warnings():  # beartype's PEP 585 notes on their type hints: not the user's concern
            warnings.filterwarnings("ignore", module=r"beartype")
            return importlib.import_module(f"{name}.phenaki_pytorch")
    finally:
        if placeholder:
            del sys.modules["torchvision"]


def lfq_codes(codes: int) -> int:
    """LFQ's code count must be a power of two: the smallest one that holds ours."""
    return 1 << (codes - 1).bit_length()


@dataclass
class PhenakiPytorch:
    """Their C-ViViT (trained alone), and their Phenaki wrapping a copy of it with their MaskGit."""

    cvivit: torch.nn.Module
    phenaki: torch.nn.Module
    codes: int
    clip_grids: int  # token grids of one 16-frame clip
    train_grids: int  # token grids a MaskGIT training row holds (context + event, as kinema's)


def build_phenaki_pytorch(pipe: PhenakiPipeline) -> PhenakiPytorch:
    """The closest phenaki-pytorch to `pipe`, at its size, on its device, with kinema's text."""
    from transformers import T5Config

    pp = _phenaki_pytorch()
    t, m = pipe.tokenizer.config, pipe.transformer.config
    codes = lfq_codes(t.codebook_size)
    cvivit = pp.CViViT(
        dim=t.dim, codebook_size=codes, image_size=t.image_size, patch_size=t.downsample, temporal_patch_size=t.temporal_patch,
        spatial_depth=t.depth, temporal_depth=t.depth, heads=t.heads, dim_head=t.dim_head, channels=t.channels, use_vgg_and_gan=False,
    )
    train_grids = m.context_grids + m.event_grids
    maskgit = pp.MaskGit(
        dim=m.dim, depth=m.depth, heads=m.heads, dim_head=m.dim_head, ff_mult=m.ff_mult, dim_context=m.text_dim,
        num_tokens=codes, max_seq_len=train_grids * m.grid**2,
    )
    # Phenaki() asks T5's config for the text width even when text_embed_dim is given (its
    # default() evaluates eagerly): a local config answers, so nothing downloads
    sys.modules["phenaki_pytorch.t5"].T5_CONFIGS[_TEXT_NAME] = {"config": T5Config(d_model=m.text_dim)}
    phenaki = pp.Phenaki(
        maskgit=maskgit, cvivit=cvivit, steps=pipe.sampler.num_inference_steps, t5_name=_TEXT_NAME, text_embed_dim=m.text_dim,
        cond_drop_prob=m.cond_drop,
    )
    phenaki.encode_texts = lambda texts, output_device=None: text_embeddings(pipe, texts)
    return PhenakiPytorch(cvivit.to(pipe.device), phenaki.to(pipe.device), codes, t.token_frames(pipe.frames_per_event), train_grids)


def text_embeddings(pipe: PhenakiPipeline, texts: list[str]) -> torch.Tensor:
    """kinema's token embeddings, trimmed as kinema's pipeline trims them; padding stays zero,
    which is how phenaki-pytorch finds its text mask."""
    from ..nn.attention import trim_padding

    encoded = pipe.text_encoder.encode(list(texts), device=pipe.device)
    return trim_padding(encoded.tokens, encoded.mask)[0]


@dataclass
class Matchup:
    measure: str
    kinema_seconds: float
    theirs_seconds: float
    speedup: float  # theirs / kinema: how many times faster kinema is (below 1: slower)
    kinema_tflop: float | None = None  # per step, forward + backward (training steps)
    theirs_tflop: float | None = None

    @classmethod
    def of(cls, measure: str, kinema: float, theirs: float, kinema_tflop: float | None = None, theirs_tflop: float | None = None) -> Matchup:
        return cls(measure, kinema, theirs, theirs / kinema, kinema_tflop, theirs_tflop)

    def verdict(self) -> str:
        if self.speedup >= 1:
            return f"kinema {self.speedup:.2f}× faster"
        return f"kinema {1 / self.speedup:.2f}× slower"


@dataclass
class VersusReport:
    competitor: str  # name and version
    matchups: list[Matchup] = field(default_factory=list)
    parameters: dict[str, list[int]] = field(default_factory=dict)  # component -> [kinema, theirs]
    notes: list[str] = field(default_factory=list)  # where the two configurations differ

    def rows(self) -> list[tuple[str, str]]:
        rows = []
        for m in self.matchups:
            flops = f" ({m.kinema_tflop:.3g} vs {m.theirs_tflop:.3g} TFLOP)" if m.kinema_tflop is not None and m.theirs_tflop is not None else ""
            rows.append((f"vs {self.competitor}: {m.measure}", f"kinema {m.kinema_seconds:.2f} s, theirs {m.theirs_seconds:.2f} s{flops}: {m.verdict()}"))
        for component, (ours, theirs) in self.parameters.items():
            rows.append((f"vs {self.competitor}: {component} parameters", f"kinema {ours / 1e6:.2f} M, theirs {theirs / 1e6:.2f} M"))
        rows += [(f"vs {self.competitor}: note", note) for note in self.notes]
        return rows


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compare(
    pipe: PhenakiPipeline,
    competitor: str = "phenaki-pytorch",
    *,
    peak: float,
    runs: int = 5,
    repeats: int = 3,
    progress: Callable[[str], None] = lambda _: None,
) -> VersusReport:
    """Sampling one event (median of `runs`, the two sides interleaved so a busy machine slows
    both alike) and one training step of each component (median of `repeats`), for both."""
    check_competitor(competitor)
    check_pipeline(pipe, competitor)
    from ..data.shapes import ShapesVideoDataset

    torch.manual_seed(0)
    theirs = build_phenaki_pytorch(pipe)
    device, grid = pipe.device, pipe.transformer.config.grid
    steps, guidance = pipe.sampler.num_inference_steps, pipe.sampler.guidance_scale
    report = VersusReport(f"{competitor} {importlib.metadata.version(competitor)}")

    progress(f"vs {competitor}: sampling")

    def ours_sample(seed: int) -> None:
        pipe(PROMPT, seed=seed, num_inference_steps=steps, guidance_scale=guidance)

    def theirs_sample(seed: int) -> None:
        torch.manual_seed(seed)
        with autocast(device):
            theirs.phenaki.sample(texts=PROMPT, num_frames=pipe.frames_per_event, cond_scale=guidance)

    ours_sample(0), theirs_sample(0)  # warm-up: kernels, caches, the text encoder
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(runs):
        times[0].append(seconds_of(lambda: ours_sample(i), device))
        times[1].append(seconds_of(lambda: theirs_sample(i), device))
    sample_label = f"sample one {pipe.frames_per_event}-frame event ({steps} steps, guidance {guidance:g}, median of {runs})"
    report.matchups.append(Matchup.of(sample_label, statistics.median(times[0]), statistics.median(times[1])))

    ours_steps = {name.split(" ")[0]: (name, module, loss_fn) for name, module, loss_fn in pipe.training_examples()}
    clips = ShapesVideoDataset(batch_size=TOKENIZER_BATCH).batch(0).video.to(device)
    ids = torch.randint(0, theirs.codes, (TRANSFORMER_BATCH, theirs.train_grids, grid, grid), device=device)
    text = text_embeddings(pipe, [PROMPT] * TRANSFORMER_BATCH)
    matched = [
        ("tokenizer", f"train step: C-ViViT, {TOKENIZER_BATCH} clips", theirs.cvivit, lambda: theirs.cvivit(clips)),
        ("transformer", f"train step: MaskGIT, {TRANSFORMER_BATCH} events", theirs.phenaki.maskgit, lambda: theirs.phenaki(video_codebook_ids=ids, text_embeds=text)),
    ]
    for key, label, module, loss_fn in matched:
        progress(f"vs {competitor}: {label}")
        name, our_module, our_loss = ours_steps[key]
        ours = time_training_step(name, our_module, our_loss, peak, repeats)
        them = time_training_step(label, module, loss_fn, peak, repeats)
        report.matchups.append(Matchup.of(label, ours.seconds, them.seconds, ours.tflop, them.tflop))

    report.parameters = {
        "C-ViViT": [_parameters(pipe.tokenizer), _parameters(theirs.cvivit)],
        "MaskGIT": [_parameters(pipe.transformer), _parameters(theirs.phenaki.maskgit)],
    }
    report.notes = _differences(pipe, theirs)
    return report


def _differences(pipe: PhenakiPipeline, theirs: PhenakiPytorch) -> list[str]:
    """What could not be matched, in words, computed from the two configurations."""
    t, m = pipe.tokenizer.config, pipe.transformer.config
    levels = "×".join(str(n) for n in t.fsq_levels)
    event, context, grid_tokens = m.event_tokens, m.context_tokens, m.grid**2
    notes = [
        f"quantizer: kinema FSQ {levels} = {t.codebook_size} codes; theirs LFQ (their default) with {theirs.codes} codes (a power of two)",
        f"MaskGIT output: kinema one softmax per FSQ digit ({sum(t.fsq_levels)} classes); theirs one softmax over {theirs.codes} codes",
        f"sampling: kinema's MaskGIT reads {context} context + {event} event tokens a step (a first event fills the context slot "
        f"with a learned stand-in); theirs reads {theirs.clip_grids * grid_tokens} (a first event has no context)",
        f"MaskGIT training: both read {theirs.train_grids * grid_tokens} tokens a row (theirs as a {pipe.tokenizer.config.video_frames(theirs.train_grids)}-frame clip, "
        f"the way it learns to continue); kinema's loss is on the {event} event tokens, theirs on all; random codes, same captions",
        f"C-ViViT: kinema conv encoder/decoder around a block-causal transformer of depth {t.depth} on each side; theirs linear "
        f"patch embeddings with a spatial and a causal temporal transformer of depth {t.depth} on each side, trained without "
        "its VGG and GAN losses (they need torchvision and downloaded weights)",
        f"text: both read kinema's token embeddings (theirs would use T5); both run in {resolve(None, pipe.device)} in this process",
    ]
    if t.train_decode_frames and t.train_decode_frames < pipe.frames_per_event:
        notes.append(f"C-ViViT training: kinema decodes {t.train_decode_frames} of {pipe.frames_per_event} frames a clip (train_decode_frames); theirs all")
    if theirs.clip_grids * grid_tokens != event:
        notes.append(f"tokens per event differ: kinema {event}, theirs {theirs.clip_grids * grid_tokens}")
    return notes
