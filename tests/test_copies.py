"""One object, drawn once (kinema.data.copies): a second copy of a named object is painted
out, the object itself and everything else left as drawn."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kinema.data.copies import drawn_once, named_colors
from kinema.world.judge import judge, second_copy_frames
from kinema.world.language import caption, parse
from kinema.world.render import render_event
from kinema.world.sample import plan_story, random_event


def _object(clip: np.ndarray) -> np.ndarray:
    """[T, H, W] bool: where `clip` differs from its first pixel's colour (a world clip's object)."""
    return np.abs(clip.astype(int) - clip[0, 0, 0]).sum(-1) > 60


def _with_copy(text: str, copy_text: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The world's clip of `text`, and the same clip with the object of `copy_text` (same
    background, same colour, drawn elsewhere) pasted on where it does not touch the first."""
    (a,) = plan_story([parse(text)], seed=seed)
    clip = render_event(a)
    for s in range(seed + 1, seed + 50):
        (b,) = plan_story([parse(copy_text)], seed=s)
        other = render_event(b)
        near = ndimage.binary_dilation(_object(clip), structure=np.ones((1, 3, 3), bool), iterations=3)
        if not (_object(other) & near).any():
            twice = clip.copy()
            twice[_object(other)] = other[_object(other)]
            return clip, twice
    raise AssertionError("no layout keeps the copy apart")


def test_the_world_is_left_as_it_is() -> None:
    """Every world clip draws each object once: nothing is painted, at 64x64 or at 32x32."""
    rng = np.random.default_rng(3)
    for _ in range(12):
        spec, event = random_event(rng)
        colors = [o.color for o in spec.objects]
        for size in (64, 32):
            clip = render_event(event, size=size)
            assert np.array_equal(drawn_once(clip, colors), clip), caption(spec)


def test_a_second_copy_is_painted_out_and_the_object_kept() -> None:
    text = "a large red square moves to the right in the forest"
    clip, twice = _with_copy(text, "a small red square moves to the right in the forest")
    assert judge(twice, text).passed and second_copy_frames(twice, ["red"]) == len(twice)
    once = drawn_once(twice, ["red"])
    assert second_copy_frames(once, ["red"]) == 0
    assert judge(once, text).passed
    obj = _object(clip)
    assert np.array_equal(once[obj], clip[obj]), "the object's pixels stay as drawn"
    assert np.array_equal(drawn_once(twice, ["blue"]), twice), "only the named colours are read"


def test_the_copy_seen_longest_is_the_object() -> None:
    """A copy larger than the object, but only for the first frames, is the one painted out."""
    text = "a small red circle moves down on a black background"
    clip, twice = _with_copy(text, "a large red square stays still on a black background")
    twice[6:] = clip[6:]
    once = drawn_once(twice, ["red"])
    assert np.array_equal(once[_object(clip)], clip[_object(clip)])
    assert second_copy_frames(once, ["red"]) == 0


def test_an_object_that_jumps_is_not_a_copy() -> None:
    """One blob per frame is the object, wherever it goes: a jump is left for the judge."""
    text = "a red circle stays still in the desert"
    clip, twice = _with_copy(text, "a red circle stays still in the desert")
    moved = np.where(_object(clip)[..., None], clip[0, 0, 0], twice)  # the copy alone
    jumped = np.concatenate([clip[:8], moved[8:]])
    assert second_copy_frames(jumped, ["red"]) == 0
    assert np.array_equal(drawn_once(jumped, ["red"]), jumped)


def test_named_colors_are_the_sentences_objects() -> None:
    assert named_colors("a red circle moves up and a blue square stays still in the forest") == ["red", "blue"]
    assert named_colors("the red circle moves up") == ["red"]
    assert named_colors("a yellow triangle appears") == ["yellow"]
    assert named_colors("the blue square disappears") == ["blue"]
    assert named_colors("the camera zooms in") == []
    assert named_colors("the scene changes to the desert") == []
    assert named_colors("a plaid thing happens") == []
