"""The words of the Shapes world: canonical captions, paraphrases, and the parser.

Three jobs share ONE lexicon (the phrase tables below), so every phrase the generator
can write is a phrase the parser reads, and nothing else is:

- `caption` writes WORLD.md's canonical grammar. The tables are the grammar: the first
  phrase of every table and the first template of every kind *are* the canonical words
  (taken from `spec.py`), so the canonical caption is just the first choice everywhere.
- `paraphrase` / `describe` say the same meaning in other words, for training captions.
  Every phrase table and template list is split into *train* and *held-out* parts.
  `split="train"` never writes held-out material; `split="heldout"` always writes at
  least one held-out phrase or template, so a model trained on train captions can be
  scored on sentences it never saw that mean exactly the same thing (`uses_heldout`).
- `parse` reads all of them back (both splits, any case and punctuation) into the
  meaning dataclasses of `spec.py`, and says which word it does not know.
  `parse(caption(s)) == s` and `parse(paraphrase(s, rng, split)) == s` for every `s`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .spec import (
    BACKGROUND_PHRASES,
    CAMERA_PHRASES,
    COLORS,
    MOTION_PHRASES,
    SHAPES,
    SIZES,
    AppearSentence,
    CameraSentence,
    DisappearSentence,
    MoveSentence,
    ObjectSpec,
    SceneChangeSentence,
    SceneSpec,
    Sentence,
    sentence_kind,
)

SPLITS = ("train", "heldout")


class ParseError(ValueError):
    """A sentence the Shapes world cannot read; the message says what to change."""


@dataclass(frozen=True)
class Words:
    """One concept's phrases. `train[0]` is the canonical one; `heldout` phrases are
    written only by held-out paraphrases (the parser reads all of them)."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.train + self.heldout


def _table(canonical: dict[str, str], train: dict[str, tuple[str, ...]], heldout: dict[str, tuple[str, ...]]) -> dict[str, Words]:
    """Per-value phrase lists whose canonical phrase comes from `spec.py`, not a copy."""
    if not canonical.keys() == train.keys() == heldout.keys():
        raise RuntimeError(f"phrase table keys {sorted(train)} do not match the world's {sorted(canonical)}")
    return {value: Words((canonical[value], *train[value]), heldout[value]) for value in canonical}


def _names(names) -> dict[str, str]:
    return {name: name for name in names}


# --- the lexicon: objects -------------------------------------------------------------
# Colour synonyms are chosen so each is nearest (in RGB) to its own colour only.

SIZE_WORDS = _table(
    _names(SIZES),
    {"small": ("little", "tiny"), "medium": ("medium-sized", "mid-sized"), "large": ("big", "huge")},
    {"small": ("petite", "miniature"), "medium": ("average-sized", "middle-sized"), "large": ("giant", "enormous")},
)
COLOR_WORDS = _table(
    _names(COLORS),
    {
        "red": ("crimson", "scarlet"),
        "green": ("emerald", "grass-green"),
        "blue": ("cobalt", "royal-blue"),
        "yellow": ("golden", "lemon-yellow"),
        "purple": ("violet", "magenta"),
        "orange": ("tangerine", "bright orange"),
        "cyan": ("turquoise", "aqua"),
        "white": ("snow-white", "ivory"),
    },
    {
        "red": ("ruby", "cherry-red"),
        "green": ("jade", "lime"),
        "blue": ("sapphire", "ultramarine"),
        "yellow": ("canary", "sunflower-yellow"),
        "purple": ("plum", "amethyst"),
        "orange": ("pumpkin-orange", "marigold"),
        "cyan": ("aquamarine",),
        "white": ("chalk-white", "milky-white"),
    },
)
SHAPE_WORDS = _table(
    _names(SHAPES),
    {
        "circle": ("ball", "disk", "disc", "dot", "round shape"),
        "square": ("box", "block", "tile", "cube"),
        "triangle": ("pyramid", "wedge", "triangular shape"),
    },
    {"circle": ("orb", "sphere"), "square": ("crate", "brick"), "triangle": ("arrowhead", "spike")},
)
# How size, colour and shape combine. The held-out form puts the colour after the shape,
# which the parser reads as "a colour right after a colourless shape belongs to it".
OBJECT_FORMS = Words(("{size} {color} {shape}", "{color} {size} {shape}"), ("{size} {shape} coloured {color}",))

# --- the lexicon: what happens --------------------------------------------------------

MOTION_WORDS = _table(
    MOTION_PHRASES,
    {
        "right": ("moves right", "drifts right", "slides to the right", "travels rightwards", "heads right", "goes right"),
        "left": ("moves left", "drifts left", "slides to the left", "travels leftwards", "heads left", "goes left"),
        "up": ("rises", "floats up", "climbs", "goes up", "moves upwards"),
        "down": ("sinks", "falls", "drops", "goes down", "moves downwards"),
        "bounces": ("hops", "bounces up and down", "hops up and down", "jumps up and down"),
        "grows": ("gets bigger", "expands", "grows larger", "swells"),
        "shrinks": ("gets smaller", "contracts", "grows smaller", "shrinks down"),
        "still": ("stays put", "does not move", "rests", "sits still", "stays in place"),
    },
    {
        "right": ("glides rightward", "shifts to the right"),
        "left": ("glides leftward", "shifts to the left"),
        "up": ("ascends", "drifts upward"),
        "down": ("descends", "drifts downward"),
        "bounces": ("bobs up and down", "springs up and down"),
        "grows": ("enlarges", "inflates"),
        "shrinks": ("dwindles", "deflates"),
        "still": ("holds still", "stands motionless"),
    },
)
# Gerunds, for templates such as "there is a red ball rising at night". The world has no
# canonical gerund, so these tables start with their own plainest phrase.
MOTION_GERUNDS: dict[str, Words] = {
    "right": Words(
        ("moving to the right", "moving right", "drifting right", "sliding to the right", "travelling rightwards", "heading right"),
        ("gliding rightward", "shifting to the right"),
    ),
    "left": Words(
        ("moving to the left", "moving left", "drifting left", "sliding to the left", "travelling leftwards", "heading left"),
        ("gliding leftward", "shifting to the left"),
    ),
    "up": Words(("moving up", "rising", "floating up", "climbing", "going up"), ("ascending", "drifting upward")),
    "down": Words(("moving down", "sinking", "falling", "dropping", "going down"), ("descending", "drifting downward")),
    "bounces": Words(
        ("bouncing", "hopping", "bouncing up and down", "jumping up and down"), ("bobbing up and down", "springing up and down")
    ),
    "grows": Words(("growing", "getting bigger", "expanding", "swelling"), ("enlarging", "inflating")),
    "shrinks": Words(("shrinking", "getting smaller", "contracting"), ("dwindling", "deflating")),
    "still": Words(("staying still", "staying put", "not moving", "resting", "sitting still"), ("holding still", "standing motionless")),
}
CAMERA_WORDS = _table(
    CAMERA_PHRASES,
    {
        "in": ("the camera pushes in", "the view zooms in", "the camera moves closer", "we zoom in"),
        "out": ("the camera pulls back", "the view zooms out", "the camera moves away", "we zoom out"),
    },
    {"in": ("the camera closes in", "the shot tightens"), "out": ("the camera backs away", "the shot widens")},
)
APPEAR_WORDS = Words(("appears", "pops in", "shows up", "comes into view", "pops up"), ("materialises", "fades in"))
DISAPPEAR_WORDS = Words(("disappears", "vanishes", "fades away", "goes away"), ("evaporates", "fades out"))

# --- the lexicon: backgrounds ---------------------------------------------------------

BACKGROUND_WORDS = _table(
    BACKGROUND_PHRASES,
    {
        "black": ("against a black backdrop", "on black", "on a plain black background"),
        "gray": ("against a gray backdrop", "on grey", "on a plain gray background"),
        "night": ("under the night sky", "in the night", "at nighttime", "under the stars"),
        "forest": ("in the woods", "among the trees", "in a forest"),
        "desert": ("on the sand", "in the dunes", "in a desert"),
        "ocean": ("over the sea", "above the water", "over the waves"),
    },
    {
        "black": ("against pure black", "on a jet-black background"),
        "gray": ("on an ash-gray background", "against a slate-gray backdrop"),
        "night": ("beneath a starry sky", "after dark"),
        "forest": ("in the woodland", "between the trees"),
        "desert": ("across the dunes", "in the sahara"),
        "ocean": ("out at sea", "above the open ocean"),
    },
)
# The background as a noun, for scene changes: "the scene changes to the desert". The
# canonical noun is the caption phrase without its preposition ("at night" -> "night").
BACKGROUND_NOUNS = _table(
    {name: phrase.split(" ", 1)[1] for name, phrase in BACKGROUND_PHRASES.items()},
    {
        "black": ("black", "a black backdrop"),
        "gray": ("gray", "a gray backdrop"),
        "night": ("nighttime", "the night"),
        "forest": ("the woods", "a forest"),
        "desert": ("the dunes", "a desert"),
        "ocean": ("the sea", "the open sea"),
    },
    {
        "black": ("pure black",),
        "gray": ("an ash-gray background",),
        "night": ("a starry night",),
        "forest": ("the woodland",),
        "desert": ("the sahara",),
        "ocean": ("the high seas",),
    },
)
# A scene change is a phrase with the background in it; its words around the slot are
# the marker the parser looks for.
SCENE_CHANGE_WORDS = Words(
    (
        "the scene changes to {bg_noun}",
        "the scene switches to {bg_noun}",
        "the setting becomes {bg_noun}",
        "we move to {bg_noun}",
        "cut to {bg_noun}",
        "we are now {bg}",
    ),
    ("the backdrop turns into {bg_noun}", "we find ourselves {bg}"),
)

# --- templates ------------------------------------------------------------------------
# Words the templates put around the slots. Train templates use only FILLERS; every
# held-out template has at least one HELDOUT_MARKER, which is how `uses_heldout` sees it.
FILLERS = ("a", "an", "the", "and", "while", "there", "is", "that", "which", "it", "we", "see", "on", "then", "now", "next",
           "new", "also")
HELDOUT_MARKERS = ("in this clip", "you can see", "meanwhile", "whereas", "framing", "after that", "a moment later",
                   "out of nowhere", "coloured")

# Slots: {a_obj} object with its article, {obj} without, {motion} / {motion_ing} finite
# or gerund, {bg} background phrase, numbered slots for two objects; the story kinds add
# {camera}, {appear}, {disappear}, {change}. Every template of a kind names the same
# concepts, so a held-out choice forced on one slot is always written.
TEMPLATES: dict[str, Words] = {
    "one object": Words(
        (
            "{a_obj} {motion} {bg}",
            "{bg}, {a_obj} {motion}",
            "there is {a_obj} that {motion} {bg}",
            "there is {a_obj} {motion_ing} {bg}",
            "{bg}, there is {a_obj} {motion_ing}",
            "we see {a_obj} {motion_ing} {bg}",
            "{a_obj} {motion_ing} {bg}",
            "{a_obj} {bg} {motion}",
        ),
        ("in this clip, {a_obj} {motion} {bg}", "you can see {a_obj} {motion_ing} {bg}"),
    ),
    "two objects": Words(
        (
            "{a_obj1} {motion1} and {a_obj2} {motion2} {bg}",
            "{a_obj1} {motion1} while {a_obj2} {motion2} {bg}",
            "{bg}, {a_obj1} {motion1} and {a_obj2} {motion2}",
            "{bg}, {a_obj1} {motion1} while {a_obj2} {motion2}",
            "there is {a_obj1} that {motion1} and {a_obj2} that {motion2} {bg}",
            "we see {a_obj1} {motion1_ing} and {a_obj2} {motion2_ing} {bg}",
        ),
        ("{a_obj1} {motion1}; meanwhile, {a_obj2} {motion2} {bg}", "{bg}, {a_obj1} {motion1} whereas {a_obj2} {motion2}"),
    ),
    "camera scene": Words(
        ("{camera} on {a_obj} {bg}", "{bg}, {camera} on {a_obj}", "there is {a_obj} {bg} and {camera}"),
        ("in this clip, {camera} on {a_obj} {bg}", "{camera}, framing {a_obj} {bg}"),
    ),
    "motion": Words(
        ("the {obj} {motion}", "then the {obj} {motion}", "now the {obj} {motion}", "next, the {obj} {motion}"),
        ("after that, the {obj} {motion}", "a moment later, the {obj} {motion}", "you can see the {obj} {motion_ing}"),
    ),
    "camera": Words(
        ("{camera}", "then {camera}", "now {camera}", "next, {camera}"),
        ("after that, {camera}", "a moment later, {camera}"),
    ),
    "appear": Words(
        ("{a_obj} {appear}", "then {a_obj} {appear}", "now {a_obj} {appear}", "next, {a_obj} {appear}", "a new {obj} {appear}"),
        ("after that, {a_obj} {appear}", "out of nowhere, {a_obj} {appear}"),
    ),
    "disappear": Words(
        ("the {obj} {disappear}", "then the {obj} {disappear}", "now the {obj} {disappear}", "next, the {obj} {disappear}"),
        ("after that, the {obj} {disappear}", "a moment later, the {obj} {disappear}"),
    ),
    "scene": Words(("{change}", "then {change}", "next, {change}"), ("after that, {change}", "a moment later, {change}")),
}
TRAIN_TEMPLATES: tuple[str, ...] = tuple(t for words in TEMPLATES.values() for t in words.train)
HELDOUT_TEMPLATES: tuple[str, ...] = tuple(t for words in TEMPLATES.values() for t in words.heldout)

# Spelling variants read as one word (the tables use the right-hand spelling).
SPELLINGS = {"grey": "gray", "traveling": "travelling", "colored": "coloured", "materializes": "materialises"}


# --- one lexicon for writing and reading ----------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What a phrase means to the parser, and whether only held-out text uses it."""

    category: str  # size, color, shape, motion, background, camera, appear, disappear, change, filler
    value: str
    heldout: bool


def _normalise(text: str) -> list[str]:
    """Lower-case words without punctuation; hyphens split ("snow-white" = "snow white")."""
    text = text.lower().replace("n't", " not")
    text = re.sub(r"[^\w\s]|_", " ", text)
    return [SPELLINGS.get(word, word) for word in text.split()]


def _slot_free(template: str) -> str:
    return re.sub(r"\{\w+\}", " ", template)


def _build_lexicon() -> dict[tuple[str, ...], Entry]:
    lexicon: dict[tuple[str, ...], Entry] = {}

    def add(category: str, value: str, words: Words) -> None:
        for heldout, phrases in ((False, words.train), (True, words.heldout)):
            for phrase in phrases:
                entry = Entry(category, value, heldout)
                key = tuple(_normalise(phrase))
                if lexicon.setdefault(key, entry) != entry:
                    raise RuntimeError(f"the phrase {phrase!r} means both {lexicon[key]} and {entry}")

    tables = {
        "size": [SIZE_WORDS],
        "color": [COLOR_WORDS],
        "shape": [SHAPE_WORDS],
        "motion": [MOTION_WORDS, MOTION_GERUNDS],
        "background": [BACKGROUND_WORDS, BACKGROUND_NOUNS],
        "camera": [CAMERA_WORDS],
    }
    for category, category_tables in tables.items():
        for table in category_tables:
            for value, words in table.items():
                add(category, value, words)
    add("appear", "", APPEAR_WORDS)
    add("disappear", "", DISAPPEAR_WORDS)
    # "the scene changes to {bg_noun}" is read as the marker "the scene changes to" + a background
    markers = [tuple(_slot_free(phrase).strip() for phrase in part) for part in (SCENE_CHANGE_WORDS.train, SCENE_CHANGE_WORDS.heldout)]
    add("change", "", Words(*markers))
    add("filler", "", Words(FILLERS, HELDOUT_MARKERS))
    return lexicon


LEXICON: dict[tuple[str, ...], Entry] = _build_lexicon()
_LONGEST = max(len(key) for key in LEXICON)


def _match(words: list[str], text: str) -> list[tuple[int, int, Entry]]:
    """Greedy longest match of lexicon phrases over `words`: (first word, end word, entry);
    any other word is an error."""
    matches, i = [], 0
    while i < len(words):
        for n in range(min(_LONGEST, len(words) - i), 0, -1):
            entry = LEXICON.get(tuple(words[i : i + n]))
            if entry is not None:
                matches.append((i, i + n, entry))
                i += n
                break
        else:
            raise ParseError(
                f'unknown word {words[i]!r} in "{text.strip()}"; the Shapes world has only circles, squares and '
                f"triangles coloured {', '.join(COLORS)}, their motions and backgrounds (see WORLD.md)"
            )
    return matches


def _tokens(text: str) -> list[tuple[str, Entry]]:
    words = _normalise(text)
    return [(" ".join(words[a:b]), entry) for a, b, entry in _match(words, text)]


def phrase_spans(text: str) -> list[tuple[int, int, Entry]]:
    """The lexicon phrases of `text` as `parse` reads them, each with its character span
    (start, end) in `text`: what a model attending to a caption's words can be told about
    which word means what. Raises `ParseError` on an unknown word."""
    found = [(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"[^\W_]+", text)]
    words = [SPELLINGS.get(w, w) for _, _, w in found]
    if words != _normalise(text):  # "n't" is two words to the parser; no caption the world writes has it
        raise ParseError(f"cannot align the words of \"{text.strip()}\" with their characters")
    return [(found[a][0], found[b - 1][1], entry) for a, b, entry in _match(words, text)]


def uses_heldout(text: str) -> bool:
    """Whether `text` contains a held-out phrase or held-out template marker."""
    return any(entry.heldout for _, entry in _tokens(text))


# --- writing ---------------------------------------------------------------------------


def _check_meaning(sentence: Sentence) -> None:
    """Refuse meanings no caption can say (they would not round-trip)."""
    def check_object(color: str, shape: str, size: str | None = None, motion: str = "still") -> None:
        for value, table, what in ((color, COLORS, "colour"), (shape, SHAPES, "shape"), (motion, MOTION_PHRASES, "motion")):
            if value not in table:
                raise ValueError(f"unknown {what} {value!r}; the world has {', '.join(table)}")
        if size is not None and size not in SIZES:
            raise ValueError(f"unknown size {size!r}; the world has {', '.join(SIZES)} (or None)")

    if isinstance(sentence, SceneSpec):
        if sentence.background not in BACKGROUND_PHRASES:
            raise ValueError(f"unknown background {sentence.background!r}; the world has {', '.join(BACKGROUND_PHRASES)}")
        if not 1 <= len(sentence.objects) <= 2 or len({o.color for o in sentence.objects}) != len(sentence.objects):
            raise ValueError("a scene holds one or two objects of different colours")
        for obj in sentence.objects:
            check_object(obj.color, obj.shape, obj.size, obj.motion)
        if sentence.camera is not None:
            if sentence.camera not in CAMERA_PHRASES or len(sentence.objects) != 1 or sentence.objects[0].motion != "still":
                raise ValueError("a camera scene zooms 'in' or 'out' on one still object")
    elif isinstance(sentence, MoveSentence):
        check_object(sentence.color, sentence.shape, motion=sentence.motion)
    elif isinstance(sentence, AppearSentence):
        check_object(sentence.color, sentence.shape, sentence.size)
    elif isinstance(sentence, DisappearSentence):
        check_object(sentence.color, sentence.shape)
    elif isinstance(sentence, CameraSentence):
        if sentence.camera not in CAMERA_PHRASES:
            raise ValueError(f"unknown camera move {sentence.camera!r}; the world has {', '.join(CAMERA_PHRASES)}")
    elif isinstance(sentence, SceneChangeSentence):
        if sentence.background not in BACKGROUND_PHRASES:
            raise ValueError(f"unknown background {sentence.background!r}; the world has {', '.join(BACKGROUND_PHRASES)}")
    else:
        raise TypeError(f"not a sentence meaning: {sentence!r}")


def _template_kind(sentence: Sentence) -> str:
    if isinstance(sentence, SceneSpec) and sentence.camera:
        return "camera scene"  # the story sentence "the camera zooms in" is plain "camera"
    return sentence_kind(sentence)


Pick = Callable[[str, Words], str]  # (choice key, options) -> the phrase written


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _tidy(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace(" ,", ",").replace(" ;", ";").strip()


class _Slots(dict):
    """Fills a template's slots on demand, so only the slots it names are chosen."""

    def __init__(self, makers: dict[str, Callable[[], str]]):
        super().__init__()
        self.makers = makers

    def __missing__(self, slot: str) -> str:
        return self.makers[slot]()


def _render(sentence: Sentence, pick: Pick) -> str:
    """Write `sentence` with every choice made by `pick`; each choice has a key
    ("template", "color0", "motion1", "bg", ...) naming the concept it says."""
    _check_meaning(sentence)
    if isinstance(sentence, SceneSpec):
        objects = [(o.color, o.shape, o.size, o.motion) for o in sentence.objects]
        background = sentence.background
    else:
        color, shape = getattr(sentence, "color", None), getattr(sentence, "shape", None)
        objects = [(color, shape, getattr(sentence, "size", None), getattr(sentence, "motion", "still"))] if color else []
        background = getattr(sentence, "background", None)
    camera = getattr(sentence, "camera", None)

    def obj(i: int) -> str:
        color, shape, size, _ = objects[i]
        form = pick(f"form{i}", OBJECT_FORMS)
        return _tidy(
            form.format(
                size=pick(f"size{i}", SIZE_WORDS[size]) if size else "",
                color=pick(f"color{i}", COLOR_WORDS[color]),
                shape=pick(f"shape{i}", SHAPE_WORDS[shape]),
            )
        )

    def motion(i: int, table: dict[str, Words]) -> str:
        return pick(f"motion{i}", table[objects[i][3]])

    slots = _Slots({
        "obj": lambda: obj(0),
        "a_obj": lambda: _with_article(obj(0)),
        "a_obj1": lambda: _with_article(obj(0)),
        "a_obj2": lambda: _with_article(obj(1)),
        "motion": lambda: motion(0, MOTION_WORDS),
        "motion_ing": lambda: motion(0, MOTION_GERUNDS),
        "motion1": lambda: motion(0, MOTION_WORDS),
        "motion1_ing": lambda: motion(0, MOTION_GERUNDS),
        "motion2": lambda: motion(1, MOTION_WORDS),
        "motion2_ing": lambda: motion(1, MOTION_GERUNDS),
        "bg": lambda: pick("bg", BACKGROUND_WORDS[background]),
        "bg_noun": lambda: pick("bg", BACKGROUND_NOUNS[background]),
        "camera": lambda: pick("camera", CAMERA_WORDS[camera]),
        "appear": lambda: pick("appear", APPEAR_WORDS),
        "disappear": lambda: pick("disappear", DISAPPEAR_WORDS),
        "change": lambda: pick("change", SCENE_CHANGE_WORDS).format_map(slots),
    })
    return _tidy(pick("template", TEMPLATES[_template_kind(sentence)]).format_map(slots))


def _canonical(key: str, words: Words) -> str:
    return words.train[0]


@dataclass
class _Picker:
    """Random choices for one paraphrase. Train draws only train phrases; held-out draws
    from everything but makes the `forced` choice a held-out one."""

    rng: np.random.Generator
    split: str
    forced: str | None = None
    heldout_keys: list[str] = field(default_factory=list)  # choices that had a held-out option

    def __call__(self, key: str, words: Words) -> str:
        if words.heldout:
            self.heldout_keys.append(key)
        if self.split == "train":
            options = words.train
        elif key == self.forced:
            options = words.heldout
        else:
            options = words.all
        return options[int(self.rng.integers(len(options)))]


def caption(sentence: Sentence) -> str:
    """WORLD.md's canonical caption, e.g. "a small red circle moves to the right on a
    black background" or "the scene changes to the desert"."""
    return _render(sentence, _canonical)


def paraphrase(sentence: Sentence, rng: np.random.Generator, split: str = "train") -> str:
    """The same meaning in other words. "train" uses only train phrases and templates;
    "heldout" uses at least one held-out phrase or template (and may mix in train ones)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train":
        return _render(sentence, _Picker(rng, "train"))
    # A dry run lists the choices this sentence involves; one of them is then forced to
    # be held out, so every held-out paraphrase really is unseen in training.
    dry = _Picker(rng, "train")
    _render(sentence, dry)
    forced = dry.heldout_keys[int(rng.integers(len(dry.heldout_keys)))]
    return _render(sentence, _Picker(rng, "heldout", forced))


def describe(sentence: Sentence, rng: np.random.Generator, split: str = "train", canonical_prob: float = 0.3) -> str:
    """A training caption: the canonical one with probability `canonical_prob`, else a
    paraphrase from `split`."""
    if not 0.0 <= canonical_prob <= 1.0:
        raise ValueError(f"canonical_prob must be in [0, 1], got {canonical_prob}")
    return caption(sentence) if rng.random() < canonical_prob else paraphrase(sentence, rng, split)


# --- reading ---------------------------------------------------------------------------

_BACKGROUND_COLORS = ("black", "gray")  # backgrounds that a user may mistake for object colours
_COLOR_HELP = f"one of {', '.join(COLORS)}"
_TWO_OBJECT_EXAMPLE = "'a red circle moves up and a blue square stays still in the forest'"


@dataclass
class _Thing:
    """An object as the parser gathers it, word by word."""

    words: list[str] = field(default_factory=list)
    size: str | None = None
    color: str | None = None
    shape: str | None = None
    motion: str | None = None

    @property
    def name(self) -> str:
        return " ".join(self.words)


def parse(text: str) -> Sentence:
    """Read a caption or story sentence (canonical or paraphrased, any case or
    punctuation) into its meaning; raises `ParseError` naming what is wrong."""
    tokens = _tokens(text)
    if not tokens:
        raise ParseError("the sentence is empty; write e.g. 'a red circle moves up at night'")
    things: list[_Thing] = []
    open_thing: _Thing | None = None  # named by a size or colour, its shape not yet seen
    leading_motion: str | None = None  # a motion said before any object
    background = camera = None
    markers: list[str] = []
    previous: Entry | None = None  # the last word that was not a filler, and its phrase
    phrase_before = ""
    for phrase, entry in tokens:
        kind, value = entry.category, entry.value
        if kind == "filler":
            continue
        if kind == "color" and previous is not None and previous.category == "shape" and things[-1].color is None:
            things[-1].color = value  # "a ball coloured red"
            things[-1].words.append(phrase)
        elif kind in ("size", "color"):
            if open_thing is None:
                open_thing = _Thing()
                things.append(open_thing)
            if getattr(open_thing, kind) is not None:
                what = "colours" if kind == "color" else "sizes"
                raise ParseError(f"'{open_thing.name} {phrase}' gives one object two {what} in \"{text.strip()}\"")
            setattr(open_thing, kind, value)
            open_thing.words.append(phrase)
        elif kind == "shape":
            if previous is not None and previous.category == "background" and phrase_before in _BACKGROUND_COLORS:
                raise ParseError(
                    f"'{phrase_before} {phrase}' in \"{text.strip()}\": {phrase_before} is a background, not an object "
                    f"colour; objects are {', '.join(COLORS)}"
                )
            if open_thing is None:
                things.append(_Thing())
            things[-1].shape = value
            things[-1].words.append(phrase)
            open_thing = None
        elif kind == "motion":
            open_thing = None
            if not things:
                if leading_motion is not None:
                    raise ParseError(f"two motions before any object in \"{text.strip()}\"; each object has one motion")
                leading_motion = value
            elif things[-1].motion is not None:
                raise ParseError(
                    f"two motions for the {things[-1].name} in \"{text.strip()}\"; an object does one thing per sentence"
                )
            else:
                things[-1].motion = value
        elif kind in ("background", "camera"):
            current = background if kind == "background" else camera
            if current is not None and current != value:
                raise ParseError(f"two different {kind}s in \"{text.strip()}\"; name one")
            if kind == "background":
                background = value
            else:
                camera = value
        else:
            markers.append(kind)
        previous, phrase_before = entry, phrase
    if leading_motion is not None and things:
        if things[0].motion is not None:
            raise ParseError(f"two motions for the {things[0].name} in \"{text.strip()}\"")
        things[0].motion = leading_motion
    return _meaning(text.strip(), things, background, camera, markers)


def _meaning(text: str, things: list[_Thing], background: str | None, camera: str | None, markers: list[str]) -> Sentence:
    """Decide what kind of sentence the gathered words make, or say why none."""
    for thing in things:
        if thing.shape is None:
            raise ParseError(f"'{thing.name}' names no shape in \"{text}\"; say circle, square or triangle, e.g. 'a red circle'")
        if thing.color is None:
            raise ParseError(f"the {thing.name} has no colour in \"{text}\"; give it {_COLOR_HELP}, e.g. 'a red {thing.name}'")
    if len(things) > 2:
        raise ParseError(f"{len(things)} objects in \"{text}\"; a scene holds at most two")
    if len(things) == 2 and things[0].color == things[1].color:
        raise ParseError(f"both objects are {things[0].color} in \"{text}\"; two objects must differ in colour")
    if len(set(markers)) > 1 or (markers and camera):
        raise ParseError(f"\"{text}\" says several kinds of thing at once; a sentence changes one thing")
    marker = markers[0] if markers else None
    moving = [t for t in things if t.motion is not None]

    if marker == "change":
        if background is None:
            raise ParseError(f"\"{text}\" changes the scene but names no background, e.g. 'the scene changes to the desert'")
        if things:
            raise ParseError(f"a scene change names only the new background, e.g. 'the scene changes to the desert'; got \"{text}\"")
        return SceneChangeSentence(background)
    if marker in ("appear", "disappear"):
        if len(things) != 1:
            raise ParseError(f"\"{text}\" must name exactly one object that {marker}s, e.g. 'a yellow triangle {marker}s'")
        if moving:
            raise ParseError(f"an object that {marker}s does nothing else in the same sentence; got \"{text}\"")
        if background is not None:
            raise ParseError(f"\"{text}\" names a background; change it in its own sentence: 'the scene changes to ...'")
        thing = things[0]
        if marker == "appear":
            return AppearSentence(thing.color, thing.shape, thing.size)
        return DisappearSentence(thing.color, thing.shape)
    if camera is not None:
        if not things:
            if background is not None:
                raise ParseError(f"\"{text}\" zooms and names a background; a camera sentence in a story names neither object nor background")
            return CameraSentence(camera)
        if len(things) != 1 or moving:
            raise ParseError(f"a camera caption zooms on one still object, e.g. 'the camera zooms in on a red circle at night'; got \"{text}\"")
        if background is None:
            raise ParseError(
                f"\"{text}\" sets a scene but names no background; add one, e.g. 'the camera zooms in on a red circle at night'"
            )
        thing = things[0]
        return SceneSpec(background, (ObjectSpec(thing.color, thing.shape, "still", thing.size),), camera)
    if not things:
        raise ParseError(f"\"{text}\" names no object; write e.g. 'a red circle moves up at night'")
    if background is not None:
        objects = tuple(ObjectSpec(t.color, t.shape, t.motion or "still", t.size) for t in things)
        return SceneSpec(background, objects)
    if len(things) == 2:
        raise ParseError(f"\"{text}\" is a scene caption with no background; add one, e.g. {_TWO_OBJECT_EXAMPLE}")
    thing = things[0]
    if thing.motion is None:
        raise ParseError(
            f"\"{text}\" says nothing happens to the {thing.name}; give a motion ('the {thing.name} moves up') "
            f"or, to set a scene, a background ('a {thing.name} stays still at night')"
        )
    return MoveSentence(thing.color, thing.shape, thing.motion)  # a size here only identifies the object


# --- stories ---------------------------------------------------------------------------


def split_story(text: str) -> list[str]:
    """A story's sentences: one per line or a paragraph split at full stops; blank lines
    and lines starting with '#' are ignored."""
    sentences = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            sentences += [part.strip() for part in line.split(".") if part.strip()]
    if not sentences:
        raise ParseError("the story is empty; write one sentence per line, e.g. 'a red circle moves up at night'")
    return sentences


def read_story(path: str | Path) -> list[str]:
    """The sentences of a story file (see `split_story`), which must be UTF-8 text."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; save the story as UTF-8 (plain text)") from None
    return split_story(text)


def parse_story(text: str) -> list[Sentence]:
    """Every sentence of a story text read into its meaning; errors say which sentence."""
    meanings = []
    for number, sentence in enumerate(split_story(text), start=1):
        try:
            meanings.append(parse(sentence))
        except ParseError as error:
            raise ParseError(f"sentence {number}: {error}") from None
    return meanings


__all__ = [
    "APPEAR_WORDS", "BACKGROUND_NOUNS", "BACKGROUND_WORDS", "CAMERA_WORDS", "COLOR_WORDS", "DISAPPEAR_WORDS",
    "FILLERS", "HELDOUT_MARKERS", "HELDOUT_TEMPLATES", "LEXICON", "MOTION_GERUNDS", "MOTION_WORDS", "OBJECT_FORMS",
    "SCENE_CHANGE_WORDS", "SHAPE_WORDS", "SIZE_WORDS", "SPLITS", "TEMPLATES", "TRAIN_TEMPLATES", "Entry", "ParseError",
    "Words", "caption", "describe", "paraphrase", "parse", "parse_story", "read_story", "split_story", "uses_heldout",
]
