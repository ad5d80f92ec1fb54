"""The text encoder's ceiling: does it read the world's synonyms as the words they mean?

Held-out paraphrases use words the generator never saw in training ("a canary orb"), so a
model can follow them only if its frozen text encoder already places them near their
meaning. Probe that stage on its own, as `reconstruction.py` does for the tokenizer: put
each synonym in a fixed sentence, and call it read when the sentence's pooled vector is
nearer (cosine) to the same sentence with its own canonical word than with any other.
A held-out word the encoder misreads bounds the held-out category whatever the generator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..text import TextEncoder
from ..world.language import COLOR_WORDS, MOTION_WORDS, SHAPE_WORDS, Words

# Each table's words in a sentence that is otherwise the same for all of them.
PROBES: dict[str, tuple[dict[str, Words], str]] = {
    "colour": (COLOR_WORDS, "a {} circle moves up on a black background"),
    "shape": (SHAPE_WORDS, "a red {} moves up on a black background"),
    "motion": (MOTION_WORDS, "a red circle {} on a black background"),
}


@dataclass
class LexiconScore:
    # (table, split) -> (read, words); split is "train" (synonyms seen in training) or "heldout"
    read: dict[tuple[str, str], tuple[int, int]]
    # (table, split, word, what it reads as) for every misread word
    misread: list[tuple[str, str, str, str]] = field(default_factory=list)

    def misread_words(self, split: str = "heldout") -> list[str]:
        return [word for _, s, word, _ in self.misread if s == split]

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": [{"table": t, "split": s, "read": r, "words": n} for (t, s), (r, n) in self.read.items()],
            "misread": [{"table": t, "split": s, "word": w, "reads_as": a} for t, s, w, a in self.misread],
        }


@torch.no_grad()
def probe_lexicon(encoder: TextEncoder) -> LexiconScore:
    """Read every non-canonical colour, shape and motion phrase (the canonical ones read
    as themselves by construction)."""
    read: dict[tuple[str, str], tuple[int, int]] = {}
    misread = []
    for table, (words, template) in PROBES.items():
        values = list(words)
        canonical = encoder.encode([template.format(words[v].train[0]) for v in values]).pooled
        for split in ("train", "heldout"):
            phrases = [(v, p) for v in values for p in (words[v].train[1:] if split == "train" else words[v].heldout)]
            pooled = encoder.encode([template.format(p) for _, p in phrases]).pooled
            nearest = (pooled @ canonical.T).argmax(dim=1).tolist()
            wrong = [(table, split, phrase, words[values[i]].train[0]) for (value, phrase), i in zip(phrases, nearest) if values[i] != value]
            misread += wrong
            read[table, split] = (len(phrases) - len(wrong), len(phrases))
    return LexiconScore(read, misread)


def heldout_by_misread(prompts: Sequence[tuple[str, bool]], misread: Sequence[str]) -> dict[str, Any]:
    """Held-out (prompt, passed) pairs split by whether the prompt uses a held-out word the
    encoder misreads: how much of the category's failure the text encoder explains."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in misread) + r")\b") if misread else None
    split = {"with": [0, 0], "without": [0, 0]}
    for text, passed in prompts:
        side = split["with" if pattern and pattern.search(text) else "without"]
        side[0] += int(passed)
        side[1] += 1
    return {"misread_words": list(misread), **split}
