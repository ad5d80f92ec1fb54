"""The tokenizer's ceiling: the judge on a C-ViViT's reconstructions of fresh world events.

A token model can only be as good as the pixels its tokenizer draws: if the judge fails a
tokenizer's reconstruction of a true event, no MaskGIT over those tokens can pass it. So
score that stage on its own (encode, decode, judge) before reading a generator's scores,
and again after every change to the decoder.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.shapes import to_model_range, to_uint8_frames
from ..precision import autocast
from ..tokenizer.cvivit import CViViT
from ..world.judge import judge
from ..world.render import render_event
from ..world.sample import random_event
from .scoreboard import TOP_FAILURES, Progress, failure_pattern, wilson_interval


@dataclass
class ReconstructionScore:
    clips: int
    passed: int
    psnr_db: float  # mean over clips, frames in [0, 255]
    by_kind: dict[str, tuple[int, int]]  # scene kind -> (passed, clips)
    failures: list[tuple[str, int]] = field(default_factory=list)  # commonest failure patterns

    @property
    def rate(self) -> float:
        return self.passed / max(1, self.clips)

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.passed, self.clips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clips": self.clips, "passed": self.passed, "rate": self.rate, "ci95": list(self.ci95),
            "psnr_db": self.psnr_db, "by_kind": {k: {"passed": p, "clips": n} for k, (p, n) in self.by_kind.items()},
            "failures": [{"pattern": p, "count": c} for p, c in self.failures],
        }


@torch.no_grad()
def score_reconstructions(tokenizer: CViViT, clips: int = 100, seed: int = 777, batch_size: int = 10, progress: Progress | None = None) -> ReconstructionScore:
    """Encode and decode `clips` fresh world events (event i drawn from the generator seeded
    [seed, i]) in the precision a pipeline uses; judge each against its scene."""
    tokenizer = tokenizer.eval()
    device = next(tokenizer.parameters()).device
    passed, psnrs, patterns = 0, [], Counter()
    by_kind: dict[str, list[int]] = {}
    for start in range(0, clips, batch_size):
        specs, truth = [], []
        for i in range(start, min(clips, start + batch_size)):
            spec, event = random_event(np.random.default_rng([seed, i]))
            specs.append(spec)
            truth.append(render_event(event))
        with autocast(device):
            recon = to_uint8_frames(tokenizer.decode_from_indices(tokenizer.encode(to_model_range(np.stack(truth)).to(device))))
        for spec, true, made in zip(specs, truth, recon):
            verdict = judge(made, spec)
            passed += verdict.passed
            kind = by_kind.setdefault(spec.kind, [0, 0])
            kind[0] += verdict.passed
            kind[1] += 1
            patterns.update({failure_pattern(r) for r in verdict.reasons})
            mse = float(np.mean((true.astype(np.float64) - made.astype(np.float64)) ** 2))
            psnrs.append(10 * np.log10(255**2 / max(mse, 1e-10)))
        if progress:
            progress(min(clips, start + batch_size), clips)
    return ReconstructionScore(clips, passed, float(np.mean(psnrs)), {k: (p, n) for k, (p, n) in by_kind.items()}, patterns.most_common(TOP_FAILURES))
