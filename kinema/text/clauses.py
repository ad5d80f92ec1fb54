"""A sentence's clauses, so that each can be encoded on its own.

In "a white circle shrinks and a red square bounces" every token embedding of a sentence
encoder has seen every word, and a model conditioned on those tokens learns the words it
names rather than which object each belongs to ("bag of words"). Encoded alone, the clause
"a red square bounces" gives one vector that holds one object's colour, shape and motion
together, the unit a generator's object tokens should read (the idea of Feng et al. 2023,
StructureDiffusion, who encode noun phrases apart; here the vector joins the caption's
tokens as one more key of the cross-attention).

Clauses break at ",", ";", ":" and at a conjunction ("and", "while", "whereas", "but")
that starts a new noun phrase (an article follows it), so "bounces up and down" stays whole.
"""

from __future__ import annotations

import re

MAX_CLAUSES = 4  # more than a Shapes-world sentence ever holds (at most three: a scene and two objects)

_BREAK = re.compile(r"\s*[,;:]\s*|\s+(?:and|while|whereas|but)\s+(?=(?:a|an|the|there)\b)", re.IGNORECASE)


def split_clauses(sentence: str) -> list[str]:
    """The sentence's clauses in order, stripped, empty ones dropped, at most MAX_CLAUSES
    (the rest join the last)."""
    parts = [p.strip(" .!?") for p in _BREAK.split(sentence.strip())]
    parts = [p for p in parts if p]
    if len(parts) > MAX_CLAUSES:
        parts = parts[: MAX_CLAUSES - 1] + [" ".join(parts[MAX_CLAUSES - 1 :])]
    return parts
