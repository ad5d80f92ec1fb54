"""Which words of a Shapes-world caption name which object.

A text-to-video model that learns only from the denoising or masked-token loss can learn
*that* a caption names a red circle and a blue square without learning which of the two
places on the frame is the circle: on the Shapes world, Phenaki's MaskGIT drew both of two
objects with a shape between theirs (its card). TokenCompose (Wang et al., 2024) supervises
the cross-attention instead: a word naming an object should be attended to from that
object's pixels (here tokens) and not from elsewhere. The world knows both halves: its
lexicon says what each word means (here), and its palette which pixels each object covers
(`kinema.world.judge.color_pixels`).
"""

from __future__ import annotations

import re

from ..world.language import Entry, ParseError, parse, phrase_spans

OBJECT_WORDS = ("size", "color", "shape", "motion", "appear", "disappear")


def _owned_phrases(caption: str) -> tuple[list, list[tuple[int, int, Entry, list[int]]]] | None:
    """The objects `caption` names and its lexicon phrases, each with its character span and
    the indices of the objects whose attribute it states (its category's value); None when
    the world cannot read the caption."""
    try:
        meaning, spans = parse(caption), phrase_spans(caption)
    except ParseError:
        return None
    objects = list(getattr(meaning, "objects", None) or ([meaning] if hasattr(meaning, "color") else []))
    return objects, [(a, b, entry, [k for k, o in enumerate(objects) if getattr(o, entry.category, None) == entry.value]) for a, b, entry in spans]


def object_words(caption: str) -> dict[str, list[tuple[int, int]]]:
    """Object colour -> character spans of the caption's words that describe that object
    (its size, colour, shape, motion; "appears" / "vanishes" when one object is named). A
    word whose meaning fits both objects (two squares: "square") belongs to neither. A
    caption the world cannot read, or one naming no object, gives {}."""
    read = _owned_phrases(caption)
    if read is None:
        return {}
    objects, phrases = read
    words: dict[str, list[tuple[int, int]]] = {}
    for start, end, entry, owners in phrases:
        if entry.category not in OBJECT_WORDS:
            continue
        if entry.category in ("appear", "disappear"):
            owners = [0] if len(objects) == 1 else []
        if len(owners) == 1:
            words.setdefault(objects[owners[0]].color, []).append((start, end))
    return words


def _object_clauses(caption: str) -> list[tuple[int, int]] | None:
    """(start, end) of each object's clause in a caption naming two moving objects: from its
    first word (its size, colour, shape or motion) to the end of its motion; None unless the
    world reads the caption as one scene with two moving objects."""
    read = _owned_phrases(caption)
    if read is None or len(read[0]) != 2:  # only a scene names two objects
        return None
    words = [(a, b, entry.category) for a, b, entry, _ in read[1] if entry.category in ("size", "color", "shape", "motion")]
    motions = [b for _, b, category in words if category == "motion"]
    if len(motions) != 2:
        return None
    second = next(a for a, _, _ in words if a >= motions[0])
    return [(words[0][0], motions[0]), (second, motions[1])]


def first_object_caption(caption: str) -> str | None:
    """`caption` with its second object's clause cut out, in the caption's own words: "a white
    circle shrinks and a red square bounces in the desert" -> "a white circle shrinks in the
    desert". None unless the world reads the caption as one scene with two moving objects."""
    clauses = _object_clauses(caption)
    if clauses is None:
        return None
    (_, end), (_, cut) = clauses
    return caption[:end] + caption[cut:]


def second_object_caption(caption: str) -> str | None:
    """`caption` with its first object's clause cut out: "a white circle shrinks and a red
    square bounces in the desert" -> "a red square bounces in the desert" (the first clause's
    article kept and made to fit). None as for `first_object_caption`."""
    clauses = _object_clauses(caption)
    if clauses is None:
        return None
    (start, _), (cut, _) = clauses
    head, tail = caption[:start], caption[cut:]
    article = re.search(r"\b([aA])n? $", head)
    if article:
        fitting = "an " if tail[:1].lower() in "aeiou" else "a "
        head = head[: article.start()] + article.group(1) + fitting[1:]
    return head + tail


def alone_caption(caption: str) -> str | None:
    """What a composed draw (`PhenakiPipeline`) draws alone, before the rest is drawn around it:
    the first object's clause, or the second's when the first object is a circle and the second
    is not. The object drawn second tends to come out rounded (phenaki-shapes: its shape read
    wrong 43 times in 100 two-object clips, the first's 10), which a circle survives and a
    square or a triangle does not. None as for `first_object_caption`."""
    clauses = _object_clauses(caption)
    if clauses is None:
        return None
    first, second = parse(caption).objects
    if first.shape == "circle" and second.shape != "circle":
        return second_object_caption(caption)
    return first_object_caption(caption)


def swapped_caption(caption: str, attribute: str) -> str | None:
    """`caption` with the words for `attribute` ("shape" or "motion") of its two objects
    exchanged: "a white circle shrinks and a red square bounces" -> "a white square shrinks
    and a red circle bounces". The same words, bound the other way: the hard negative that
    NegCLIP (Yuksekgonul et al., 2023) trains against, here for a generator (`MaskGit.loss`).
    None when the caption does not name two objects that differ in `attribute`."""
    read = _owned_phrases(caption)
    if read is None:
        return None
    objects, phrases = read
    if len(objects) != 2 or getattr(objects[0], attribute) == getattr(objects[1], attribute):
        return None
    owned = [[(a, b) for a, b, entry, owners in phrases if entry.category == attribute and owners == [k]] for k in (0, 1)]
    if any(len(spans) != 1 for spans in owned):
        return None
    (a0, a1), (b0, b1) = sorted(spans[0] for spans in owned)
    return caption[:a0] + caption[b0:b1] + caption[a1:b0] + caption[a0:a1] + caption[b1:]
