"""The world's words: canonical captions, the train/held-out paraphrase split, the parser."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from kinema.world import language
from kinema.world.language import (
    BACKGROUND_NOUNS,
    BACKGROUND_WORDS,
    CAMERA_WORDS,
    COLOR_WORDS,
    HELDOUT_TEMPLATES,
    MOTION_GERUNDS,
    MOTION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    TEMPLATES,
    TRAIN_TEMPLATES,
    ParseError,
    caption,
    describe,
    paraphrase,
    parse,
    parse_story,
    read_story,
    split_story,
    uses_heldout,
)
from kinema.world.sample import random_scene, random_story
from kinema.world.spec import (
    BACKGROUNDS,
    CAMERA_PHRASES,
    COLORS,
    MOTIONS,
    SHAPES,
    SIZES,
    AppearSentence,
    CameraSentence,
    DisappearSentence,
    MoveSentence,
    ObjectSpec,
    SceneChangeSentence,
    SceneSpec,
)

CANONICAL = {
    "a small red circle moves to the right on a black background": SceneSpec("black", (ObjectSpec("red", "circle", "right", "small"),)),
    "a red circle moves up and a blue square stays still in the forest": SceneSpec(
        "forest", (ObjectSpec("red", "circle", "up"), ObjectSpec("blue", "square", "still"))
    ),
    "the camera zooms in on a green triangle over the ocean": SceneSpec("ocean", (ObjectSpec("green", "triangle"),), "in"),
    "a large white square bounces in the desert": SceneSpec("desert", (ObjectSpec("white", "square", "bounces", "large"),)),
    "a medium cyan triangle grows on a gray background": SceneSpec("gray", (ObjectSpec("cyan", "triangle", "grows", "medium"),)),
    "an orange circle shrinks at night": SceneSpec("night", (ObjectSpec("orange", "circle", "shrinks"),)),
    "the red circle moves up": MoveSentence("red", "circle", "up"),
    "the camera zooms out": CameraSentence("out"),
    "a yellow triangle appears": AppearSentence("yellow", "triangle"),
    "a small yellow triangle appears": AppearSentence("yellow", "triangle", "small"),
    "the blue square disappears": DisappearSentence("blue", "square"),
    "the scene changes to the desert": SceneChangeSentence("desert"),
    "the scene changes to a black background": SceneChangeSentence("black"),
    "the scene changes to a gray background": SceneChangeSentence("gray"),
    "the scene changes to night": SceneChangeSentence("night"),
    "the scene changes to the forest": SceneChangeSentence("forest"),
    "the scene changes to the ocean": SceneChangeSentence("ocean"),
}


def every_story_sentence() -> list:
    """All later-sentence meanings there are (a few hundred), so none goes untested."""
    out: list = [CameraSentence(camera) for camera in CAMERA_PHRASES]
    out += [SceneChangeSentence(background) for background in BACKGROUNDS]
    for color, shape in itertools.product(COLORS, SHAPES):
        out += [MoveSentence(color, shape, motion) for motion in MOTIONS]
        out += [AppearSentence(color, shape, size) for size in (None, *SIZES)]
        out.append(DisappearSentence(color, shape))
    return out


def meanings(seed: int = 0, scenes: int = 2000, stories: int = 3) -> list:
    """Random scene meanings of every kind, every story sentence, and a few random stories."""
    rng = np.random.default_rng(seed)
    out = [random_scene(rng) for _ in range(scenes)] + every_story_sentence()
    for _ in range(stories):
        out += random_story(rng, 30)[0]
    return out


def categories(text: str) -> list[str]:
    return [entry.category for _, entry in language._tokens(text)]


@pytest.fixture(scope="module")
def all_meanings() -> list:
    return meanings()


@pytest.mark.parametrize("text, meaning", CANONICAL.items())
def test_canonical_examples_parse_and_are_written_exactly(text, meaning):
    assert parse(text) == meaning
    assert caption(meaning) == text


def test_parse_ignores_case_punctuation_and_spelling():
    expected = SceneSpec("gray", (ObjectSpec("red", "circle", "up"),))
    assert parse("At night, a RED ball rises.") == SceneSpec("night", (ObjectSpec("red", "circle", "up"),))
    assert parse("A red circle moves up -- on a GREY background!") == expected
    assert parse("a red ball doesn't move in the woods") == SceneSpec("forest", (ObjectSpec("red", "circle", "still"),))
    assert parse("a big red ball rises at night") == parse("a red big ball rises at night")
    assert parse("a ball, red, rises at night") == SceneSpec("night", (ObjectSpec("red", "circle", "up"),))
    assert parse("a snow white box sinks over the sea") == parse("a snow-white box sinks over the sea")


def test_round_trip_over_random_meanings(all_meanings):
    assert len(all_meanings) >= 2300
    rng = np.random.default_rng(1)
    for meaning in all_meanings:
        assert parse(caption(meaning)) == meaning, caption(meaning)
        for split in ("train", "heldout"):
            text = paraphrase(meaning, rng, split)
            assert parse(text) == meaning, (split, text)


def test_size_none_and_medium_survive_paraphrase():
    """No size named stays unnamed; a named medium keeps a medium word."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        for split in ("train", "heldout"):
            plain = paraphrase(AppearSentence("red", "square"), rng, split)
            assert "size" not in categories(plain), plain
            medium = paraphrase(AppearSentence("red", "square", "medium"), rng, split)
            assert [e.value for _, e in language._tokens(medium) if e.category == "size"] == ["medium"], medium


def test_train_paraphrases_never_use_heldout_material_and_heldout_ones_always_do(all_meanings):
    rng = np.random.default_rng(3)
    for meaning in all_meanings:
        assert not uses_heldout(caption(meaning))
        assert not uses_heldout(paraphrase(meaning, rng, "train"))
        assert uses_heldout(paraphrase(meaning, rng, "heldout"))


def test_train_split_only_draws_train_choices():
    """Checked on the generator's choices themselves, not through the parser's eyes."""

    class Checked(language._Picker):
        def __call__(self, key, words):
            phrase = super().__call__(key, words)
            assert phrase in words.train, (key, phrase)
            return phrase

    rng = np.random.default_rng(4)
    for meaning in meanings(seed=6, scenes=300, stories=0):
        language._render(meaning, Checked(rng, "train"))


def test_heldout_templates_carry_a_marker_and_train_templates_none():
    def literal(template: str) -> str:
        return re.sub(r"\{\w+\}", " ", template)

    for template in TRAIN_TEMPLATES:
        assert not uses_heldout(literal(template)), template
    for template in HELDOUT_TEMPLATES:
        assert uses_heldout(literal(template)), template


def test_templates_of_a_kind_name_the_same_concepts():
    """A held-out choice forced on one concept must be written whichever template is drawn."""
    def concepts(template: str) -> set[str]:
        return {re.sub(r"_ing$", "", s).replace("a_obj", "obj").replace("bg_noun", "bg") for s in re.findall(r"\{(\w+)\}", template)}

    for kind, words in TEMPLATES.items():
        first = concepts(words.train[0])
        for template in words.all:
            assert concepts(template) == first, (kind, template)


def test_vocabulary_is_large_and_every_concept_has_heldout_words():
    for table in (SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS, MOTION_WORDS, MOTION_GERUNDS, BACKGROUND_WORDS, BACKGROUND_NOUNS, CAMERA_WORDS):
        for value, words in table.items():
            assert words.heldout, value
            assert not set(words.train) & set(words.heldout)
    assert all(len(w.all) >= 6 for w in SHAPE_WORDS.values())
    assert all(len(w.all) >= 4 for w in MOTION_WORDS.values())
    assert all(len(w.all) >= 3 for w in COLOR_WORDS.values())
    assert len(TRAIN_TEMPLATES) + len(HELDOUT_TEMPLATES) >= 30 and len(HELDOUT_TEMPLATES) >= 10


def test_paraphrases_vary():
    rng = np.random.default_rng(7)
    meaning = SceneSpec("night", (ObjectSpec("red", "circle", "up"),))
    assert len({paraphrase(meaning, rng) for _ in range(200)}) > 100


def test_describe_mixes_canonical_and_paraphrase():
    rng = np.random.default_rng(8)
    meaning = SceneSpec("night", (ObjectSpec("red", "circle", "up"),))
    texts = [describe(meaning, rng, canonical_prob=0.3) for _ in range(1000)]
    share = sum(t == caption(meaning) for t in texts) / len(texts)
    assert 0.25 < share < 0.4
    assert all(parse(t) == meaning for t in texts)
    assert {describe(meaning, rng, canonical_prob=1.0) for _ in range(5)} == {caption(meaning)}
    with pytest.raises(ValueError):
        paraphrase(meaning, rng, "test")


def test_unknown_word_is_named():
    with pytest.raises(ParseError, match=r"""^unknown word 'dragon' in "a dragon flies at night\""""):
        parse("a dragon flies at night")
    with pytest.raises(ParseError, match="unknown word 'flies'"):
        parse("a red ball flies at night")
    assert issubclass(ParseError, ValueError)


@pytest.mark.parametrize(
    "text, message",
    [
        ("rises at night", "no object"),
        ("a ball rises at night", "has no colour"),
        ("a red rises at night", "names no shape"),
        ("a red ball rises and a red box sinks at night", "differ in colour"),
        ("a red ball rises, a blue box sinks and a green dot rests at night", "at most two"),
        ("a red ball rises and a blue box sinks", "no background; add one, e.g. 'a red circle"),
        ("the camera zooms in on a red ball", "no background; add one, e.g."),
        ("a red ball rises and sinks at night", "two motions for the red ball"),
        ("a red blue ball rises at night", "two colours"),
        ("a red ball rises at night in the forest", "two different backgrounds"),
        ("a red ball appears and rises", "does nothing else"),
        ("a red ball appears at night", "change it in its own sentence"),
        ("the red ball", "nothing happens"),
        ("a black ball rises at night", "black is a background, not an object colour"),
        ("the camera zooms in on a red ball and a blue box at night", "one still object"),
        ("the red ball appears and the camera zooms in", "several kinds of thing"),
        ("the scene changes to a red ball", "no background"),
        ("", "empty"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, message):
    with pytest.raises(ParseError, match=re.escape(message)):
        parse(text)


def test_caption_refuses_meanings_no_sentence_can_say():
    with pytest.raises(ValueError):
        caption(SceneSpec("night", (ObjectSpec("red", "circle", "up"),), "in"))
    with pytest.raises(ValueError):
        caption(SceneSpec("moon", (ObjectSpec("red", "circle"),)))
    with pytest.raises(ValueError):
        caption(MoveSentence("pink", "circle", "up"))


STORY = [
    SceneSpec("night", (ObjectSpec("red", "circle", "up"),)),
    AppearSentence("yellow", "triangle"),
    MoveSentence("red", "circle", "left"),
    SceneChangeSentence("desert"),
]


def test_story_lines_paragraph_comments_and_blank_lines(tmp_path):
    lines = "# my story\n\na red circle moves up at night\n  a yellow triangle appears\n\n# more\nthe red circle moves to the left\nthe scene changes to the desert\n"
    paragraph = "A red circle moves up at night. A yellow triangle appears. The red circle moves to the left. The scene changes to the desert."
    assert parse_story(lines) == STORY
    assert parse_story(paragraph) == STORY
    path = tmp_path / "story.txt"
    path.write_text(lines)
    assert read_story(path) == [caption(s) for s in STORY]
    assert split_story("a. b.\nc") == ["a", "b", "c"]
    for empty in ("", "\n\n", "# only a comment\n  \n", " . . "):
        with pytest.raises(ParseError, match="the story is empty"):
            parse_story(empty)
    path.write_text("# nothing\n")
    with pytest.raises(ParseError, match="the story is empty"):
        read_story(path)


def test_story_error_names_the_sentence():
    with pytest.raises(ParseError, match=r"sentence 2: unknown word 'dragon'"):
        parse_story("a red ball rises at night. a dragon appears.")
