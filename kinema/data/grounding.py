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

from ..world.language import ParseError, parse, phrase_spans

OBJECT_WORDS = ("size", "color", "shape", "motion", "appear", "disappear")


def object_words(caption: str) -> dict[str, list[tuple[int, int]]]:
    """Object colour -> character spans of the caption's words that describe that object
    (its size, colour, shape, motion; "appears" / "vanishes" when one object is named). A
    word whose meaning fits both objects (two squares: "square") belongs to neither. A
    caption the world cannot read, or one naming no object, gives {}."""
    try:
        meaning, spans = parse(caption), phrase_spans(caption)
    except ParseError:
        return {}
    objects = list(getattr(meaning, "objects", None) or ([meaning] if hasattr(meaning, "color") else []))
    words: dict[str, list[tuple[int, int]]] = {}
    for start, end, entry in spans:
        if entry.category not in OBJECT_WORDS:
            continue
        if entry.category in ("appear", "disappear"):
            owners = objects if len(objects) == 1 else []
        else:
            owners = [o for o in objects if getattr(o, entry.category, None) == entry.value]
        if len(owners) == 1:
            words.setdefault(owners[0].color, []).append((start, end))
    return words


def swapped_caption(caption: str, attribute: str) -> str | None:
    """`caption` with the words for `attribute` ("shape" or "motion") of its two objects
    exchanged: "a white circle shrinks and a red square bounces" -> "a white square shrinks
    and a red circle bounces". The same words, bound the other way: the hard negative that
    NegCLIP (Yuksekgonul et al., 2023) trains against, here for a generator (`MaskGit.loss`).
    None when the caption does not name two objects that differ in `attribute`."""
    try:
        meaning, spans = parse(caption), phrase_spans(caption)
    except ParseError:
        return None
    objects = list(getattr(meaning, "objects", None) or [])
    if len(objects) != 2 or getattr(objects[0], attribute) == getattr(objects[1], attribute):
        return None
    owned = {}
    for start, end, entry in spans:
        if entry.category == attribute:
            owners = [k for k, o in enumerate(objects) if getattr(o, attribute) == entry.value]
            if len(owners) == 1:
                owned.setdefault(owners[0], []).append((start, end))
    if sorted(owned) != [0, 1] or any(len(v) != 1 for v in owned.values()):
        return None
    (a0, a1), (b0, b1) = sorted([owned[0][0], owned[1][0]])
    return caption[:a0] + caption[b0:b1] + caption[a1:b0] + caption[a0:a1] + caption[b1:]
