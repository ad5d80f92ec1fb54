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
from collections.abc import Callable, Container

import numpy as np

from ..world.language import MOTION_GERUNDS, MOTION_WORDS, SIZE_WORDS, Entry, ParseError, Words, parse, phrase_spans
from ..world.spec import MOTION_PHRASES

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


def _two_moving_objects(caption: str) -> list[tuple[int, int, Entry, list[int]]] | None:
    """The lexicon phrases of `caption` (as `_owned_phrases`) when the world reads it as one
    scene with two moving objects, each object's clause ending with its motion; else None."""
    read = _owned_phrases(caption)
    if read is None or len(read[0]) != 2:  # only a scene names two objects
        return None
    return read[1] if sum(entry.category == "motion" for _, _, entry, _ in read[1]) == 2 else None


def first_object_caption(caption: str) -> str | None:
    """`caption` with its second object's clause cut out, in the caption's own words: "a white
    circle shrinks and a red square bounces in the desert" -> "a white circle shrinks in the
    desert". Each object's clause ends with its motion, so the cut runs from the end of the
    first motion to the end of the second. None unless the world reads the caption as one
    scene with two moving objects."""
    phrases = _two_moving_objects(caption)
    if phrases is None:
        return None
    first, second = [end for _, end, entry, _ in phrases if entry.category == "motion"]
    return caption[:first] + caption[second:]


def second_object_caption(caption: str) -> str | None:
    """`caption` with its first object's clause cut out, in the caption's own words: "a white
    circle shrinks and a red square bounces in the desert" -> "a red square bounces in the
    desert". The first clause runs from the first object's article to the second's (the
    first object word after the first motion). None as for `first_object_caption`."""
    phrases = _two_moving_objects(caption)
    if phrases is None:
        return None
    motion = next(end for _, end, entry, _ in phrases if entry.category == "motion")
    starts = [a for a, _, entry, _ in phrases if entry.category in ("size", "color", "shape")]
    first, second = (_article_start(caption, a) for a in (starts[0], next(a for a in starts if a >= motion)))
    return caption[:first] + caption[second:]


def _article_start(caption: str, start: int) -> int:
    """Where the object phrase at `start` begins, its article ("a", "an") included."""
    article = re.search(r"\b[aA]n? $", caption[:start])
    return article.start() if article else start


def infill_caption(caption: str) -> str | None:
    """What a composed draw infills the rest of the event under, once the first object is drawn
    alone and its tokens kept: `caption` with that object's shape word replaced by the second
    object's ("a white circle shrinks and a red square bounces" -> "a white square shrinks and a
    red square bounces"). Kept tokens stay whatever the caption says, and a model that reads
    the caption as a bag of words gives the object it infills the kept one's shape (on
    phenaki-shapes, two objects of one shape passed 12 of 25, a square and a triangle 2 of 24),
    so the caption names only the shape still to draw. None as for `first_object_caption`."""
    phrases = _two_moving_objects(caption)
    if phrases is None:
        return None
    shapes = [[(a, b) for a, b, entry, owners in phrases if entry.category == "shape" and owners == [k]] for k in (0, 1)]
    if any(len(spans) != 1 for spans in shapes):  # one shape word for both: nothing to change
        return caption
    (a, b), (c, d) = shapes[0][0], shapes[1][0]
    head, word = caption[:a], caption[c:d]
    article = re.search(r"\b([aA])n? $", head)  # "a crate" -> "an arrowhead"
    if article:
        head = head[: article.start()] + article.group(1) + ("n " if word[:1].lower() in "aeiou" else " ")
    return head + word + caption[b:]


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


# Motions that run one way in time, each with the motion that runs the other way.
OPPOSITE_MOTIONS = {"right": "left", "left": "right", "up": "down", "down": "up", "grows": "shrinks", "shrinks": "grows"}


def _opposite_phrases() -> dict[str, str]:
    """Each canonical and train-split motion phrase (verb and gerund) -> the same phrase for
    the opposite motion. The world's tables list opposites in step ("drifts right" and
    "drifts left", "rises" and "sinks", "gets bigger" and "gets smaller"), so they pair by
    position; a phrase with no partner ("swelling") is left out."""
    pairs = {}
    for motion, opposite in OPPOSITE_MOTIONS.items():
        pairs[MOTION_PHRASES[motion]] = MOTION_PHRASES[opposite]
        for table in (MOTION_WORDS, MOTION_GERUNDS):
            pairs.update(zip(table[motion].train, table[opposite].train))
    return pairs


_OPPOSITE_PHRASES = _opposite_phrases()


def _resay_motions(caption: str, resay: Callable[[str, str], str | None], motions: Container[str] = OPPOSITE_MOTIONS.keys()) -> str | None:
    """`caption` with the phrase of every motion in `motions` (by default those that run one
    way, the keys of `OPPOSITE_MOTIONS`) replaced by `resay(phrase, motion)`, the phrase in
    lower case. None when the world cannot read the caption, it names no such motion, or
    `resay` gives None."""
    spans = _motion_spans(caption, motions)
    return None if spans is None else _resaid(caption, spans, resay)


def _motion_spans(caption: str, motions: Container[str]) -> list[tuple[int, int, str]] | None:
    """(start, end, motion) of each phrase of `caption` for a motion in `motions`; None when
    the world cannot read the caption."""
    try:
        return [(a, b, entry.value) for a, b, entry in phrase_spans(caption) if entry.category == "motion" and entry.value in motions]
    except ParseError:
        return None


def _resaid(caption: str, spans: list[tuple[int, int, str]], resay: Callable[[str, str], str | None]) -> str | None:
    """`caption` with each phrase at `spans` (start, end, its value) replaced by
    `resay(phrase, value)`, the phrase in lower case. None when there are no spans or `resay`
    gives None."""
    said = caption
    for a, b, value in reversed(spans):  # from the end, so earlier spans keep their places
        phrase = resay(caption[a:b].lower(), value)
        if phrase is None:
            return None
        said = said[:a] + phrase + said[b:]
    return said if spans else None


def reversed_motion_caption(caption: str) -> str | None:
    """`caption` with every motion that runs one way in time reversed, in the caption's own
    words: "a red ball drifts right at night" -> "a red ball drifts left at night", "the blue
    square rises" -> "the blue square sinks", "gets bigger" -> "gets smaller". The hard
    negative for a motion's direction, which a denoising loss alone need not teach: a clip
    played backwards is as good a sample of the caption to a model that has not learned which
    way its words point (`GaussianDiffusion.loss`'s `negatives`). None when the world cannot
    read the caption, it names no such motion, or one of its phrases has no partner."""
    return _resay_motions(caption, lambda phrase, motion: _OPPOSITE_PHRASES.get(phrase))


def mirrored_caption(caption: str) -> str | None:
    """`caption` as its clip mirrored left to right says it: each motion to the right said to
    the left and back, in the caption's own words ("drifts right" -> "drifts left"); the
    caption itself when it names neither, since a mirror leaves every other motion, shape
    (a triangle stands apex up), colour and background of the Shapes world as it was. A
    scorer that should not care which way is which can then be asked both ways
    (`VideoTextMatcher.rank`'s `mirrored`). None when the world cannot read the caption or a
    left or right phrase has no partner (a held-out phrase stays unseen)."""
    spans = _motion_spans(caption, ("left", "right"))
    if spans is None:
        return None
    return _resaid(caption, spans, lambda phrase, motion: _OPPOSITE_PHRASES.get(phrase)) if spans else caption


def _train_phrase_for(phrase: str, motion: str, other: str) -> str | None:
    """The train phrase for motion `other` that sits where `phrase`, a train phrase for
    `motion`, sits in the world's tables (verb or gerund; the canonical one for the
    canonical one); None for a held-out phrase, which stays unseen."""
    table = next((t for t in (MOTION_WORDS, MOTION_GERUNDS) if phrase in t[motion].train), None)
    return None if table is None else _same_place(phrase, table[motion], table[other])


def _same_place(phrase: str, words: Words, others: Words) -> str | None:
    """The train phrase of `others` at the place `phrase` has among the train phrases of
    `words` (the canonical one for the canonical one); None for a phrase not among them (a
    held-out one, which stays unseen)."""
    if phrase not in words.train:
        return None
    return others.train[words.train.index(phrase) % len(others.train)]


def moving_caption(caption: str) -> str | None:
    """`caption` with every object that stays still said to move to the left instead, in the
    caption's own register: "a red square stays still in the desert" -> "a red square moves to
    the left in the desert", "a red square, sitting still, ..." -> "a red square, travelling
    leftwards, ...". Where only an object's shape matters (a rigid object's, kinema.data.continuity.
    steadied) it is drawn moving: a still drawing repeats one rounding of its corners sixteen
    times, a moving one shows the shape at sixteen places, whose median is truer
    (phenaki-shapes, 24 captions per shape: a square's steady drawing read as a square 18
    times against 9, circles 23 against 20, triangles 20 of 21 against 19). None when the
    world cannot read the caption, nothing in it stays still, or it says so in held-out
    words (a held-out paraphrase stays unseen)."""
    return _resay_motions(caption, lambda phrase, motion: _train_phrase_for(phrase, motion, "left"), motions=("still",))


def medium_caption(caption: str, motions: Container[str]) -> str | None:
    """`caption` with every small object whose motion is one of `motions` said to be
    medium-sized, in the caption's own register: "a small red square moves up" -> "a medium red
    square moves up", "a tiny ..." -> "a mid-sized ...". A small square is a few tokens wide,
    too few for the MaskGIT to draw its corners: where only an object's shape matters (a rigid
    object's, kinema.data.continuity.steadied) it is drawn medium-sized and scaled down
    (phenaki-shapes, 24 captions per shape: a small square's steady drawing read as a square
    9 times, a medium one's scaled to the small size 22 times; triangles 15 against 22).
    None when the world cannot read the caption, no such object is small, or it says so in
    held-out words (a held-out paraphrase stays unseen)."""
    read = _owned_phrases(caption)
    if read is None:
        return None
    objects, phrases = read
    spans = [(a, b, "small") for a, b, entry, owners in phrases if entry.category == "size" and entry.value == "small" and owners and all(getattr(objects[k], "motion", "still") in motions for k in owners)]
    return _resaid(caption, spans, lambda phrase, _: _same_place(phrase, SIZE_WORDS["small"], SIZE_WORDS["medium"]))


# For each one-way motion, the one-way motions a clip of it rules out: its reverse, and for a
# move the two across its axis. Reversal alone is not enough: once a base has learned it, most
# of its wrong moves go across the axis (the imagen-video-shapes card, "Which way").
WRONG_WAYS = {
    "right": ("left", "up", "down"),
    "left": ("right", "up", "down"),
    "up": ("down", "left", "right"),
    "down": ("up", "left", "right"),
    "grows": ("shrinks",),
    "shrinks": ("grows",),
}


def wrong_way_caption(caption: str, rng: np.random.Generator) -> str | None:
    """`caption` with every motion that runs one way sent another way that `rng` draws from
    `WRONG_WAYS` ("a red ball drifts right" -> "a red ball floats up", "... drifts left" or
    "... falls"): the hard negative for a motion's direction along *and* across its axis
    (`GaussianDiffusion.loss`'s `negatives`). The new phrase sits where the old one does in
    the world's tables (the canonical phrase for the canonical one), so a negative is worded
    as plainly or as freely as the captions it is set against.
    None when the world cannot read the caption, it names no such motion, or one of its
    phrases is not a train phrase (a held-out paraphrase stays unseen)."""

    def elsewhere(phrase: str, motion: str) -> str | None:
        return _train_phrase_for(phrase, motion, WRONG_WAYS[motion][rng.integers(len(WRONG_WAYS[motion]))])

    return _resay_motions(caption, elsewhere)


def wrong_way_captions(caption: str) -> list[str]:
    """Every caption that sends one of `caption`'s one-way motions one of its `WRONG_WAYS`,
    the rest of it as it is, in the table's words as `wrong_way_caption` words them: "a red
    ball drifts right" -> "... drifts left", "... floats up", "... sinks". What a clip that
    obeys its caption must be less likely under (`kinema.diffusion.rerank.likeliest`'s
    `negatives`). Empty when the world cannot read the caption, it names no such motion, or
    says it in held-out words (a held-out paraphrase stays unseen)."""
    spans = _motion_spans(caption, WRONG_WAYS.keys()) or []
    captions = (_resaid(caption, [span], lambda phrase, motion, other=other: _train_phrase_for(phrase, motion, other)) for span in spans for other in WRONG_WAYS[span[2]])
    return [said for said in captions if said is not None]
