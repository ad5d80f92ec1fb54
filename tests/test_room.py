"""Room for the rest of the story (kinema.data.room): objects a model placed are moved, whole
paths and all, where the next sentences can be acted out, and only when they cannot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from kinema.data.continuity import largest_of
from kinema.data.room import acts_out, film_state, room_for
from kinema.world.judge import judge, read_clip
from kinema.world.language import parse
from kinema.world.render import render_event
from kinema.world.sample import plan_story
from kinema.world.scene import GAP, Event, InfeasibleError, State, Thing, advance


def _clip(background: str, things: list[Thing], actions: tuple[str, ...]) -> np.ndarray:
    """The world's clip of `things` doing `actions`: a stand-in for an event a model drew."""
    return render_event(Event(State(background, tuple(things)), actions))


def _film_goes_on(film: np.ndarray, sentences: list[str]) -> np.ndarray:
    """`film` (the first event) and the world acting out the sentences after it from its last
    frame, as a model would continue it."""
    state = film_state(film[-1], [parse(sentences[0])])
    rng = np.random.default_rng(0)
    clips = [film]
    for sentence in sentences[1:]:
        event = advance(state, parse(sentence), rng)
        clips.append(render_event(event))
        state = event.end()
    return np.concatenate(clips)


def test_the_film_state_is_read_off_a_frame() -> None:
    clip = _clip("desert", [Thing("red", "square", 0.24, 0.3, 0.6)], ("still",))
    state = film_state(clip[-1], [parse("a red square stays still in the desert")])
    assert state is not None and state.background == "desert" and state.zoom == 1.0
    (seen,) = state.things
    assert (seen.color, seen.shape) == ("red", "square")
    assert abs(seen.x - 0.3) < 0.02 and abs(seen.y - 0.6) < 0.02 and abs(seen.side - 0.24) < 0.03


def test_a_story_the_world_placed_is_left_as_it_is() -> None:
    sentences = ["a red circle moves up in the desert", "the red circle moves to the right", "a blue square appears", "the camera zooms out"]
    for seed in range(4):
        first = render_event(plan_story([parse(s) for s in sentences], seed=seed)[0])
        assert np.array_equal(room_for(first, sentences, 0), first)


def test_an_object_at_the_edge_is_moved_where_it_can_go() -> None:
    sentences = ["a white triangle moves down over the ocean", "the white triangle moves to the right"]
    drawn = _clip("ocean", [Thing("white", "triangle", 0.24, 0.8, 0.3)], ("down",))
    with pytest.raises(InfeasibleError, match="leave the frame"):
        _film_goes_on(drawn, sentences)
    moved = room_for(drawn, sentences, 0)
    assert judge(moved, sentences[0]).passed, "its own event still obeys its sentence"
    before, after = ([r.objects["white"] for r in read_clip(clip)] for clip in (drawn, moved))
    shifts = [(a.x - b.x, a.y - b.y) for a, b in zip(after, before)]
    assert shifts[0][0] < -0.1, "moved to the left, away from the edge"
    assert np.allclose(shifts, shifts[0], atol=0.01), "the whole path moved by one shift: the motion is as drawn"
    assert judge(_film_goes_on(moved, sentences), sentences).passed


def test_two_objects_are_each_moved_for_a_zoom_in() -> None:
    """A zoom in pushes objects out from the centre: two drawn far apart would leave the frame,
    and no shift of both together makes room, so each moves its own way."""
    sentences = ["a red circle stays still and a blue square stays still on a black background", "the camera zooms in"]
    drawn = _clip("black", [Thing("red", "circle", 0.16, 0.2, 0.5), Thing("blue", "square", 0.16, 0.8, 0.5)], ("still", "still"))
    with pytest.raises(InfeasibleError, match="leave the frame"):
        _film_goes_on(drawn, sentences)
    moved = room_for(drawn, sentences, 0)
    assert judge(moved, sentences[0]).passed
    red, blue = (read_clip(moved)[-1].objects[c] for c in ("red", "blue"))
    assert red.x > 0.25 and blue.x < 0.75, "both drawn in towards the centre"
    assert judge(_film_goes_on(moved, sentences), sentences).passed


def test_only_the_newcomer_moves() -> None:
    """An appearing object is moved; the film's own objects stay where they are."""
    sentences = ["a red circle stays still on a gray background", "a green square appears", "the green square moves up"]
    drawn = _clip("gray", [Thing("red", "circle", 0.24, 0.5, 0.3), Thing("green", "square", 0.24, 0.5, 0.75)], ("still", "still"))
    moved = room_for(drawn, sentences, 1, placed=["green"])
    last = read_clip(moved)[-1].objects
    assert abs(last["red"].x - 0.5) < 0.01 and abs(last["red"].y - 0.3) < 0.01
    assert abs(last["green"].x - 0.5) > 0.1, "the square cannot rise into the circle: it goes round it"
    gap = math.ceil(GAP * 64)
    for frame in moved:
        near = ndimage.binary_dilation(largest_of(frame, "red"), structure=np.ones((3, 3), bool), iterations=gap)
        assert not (near & largest_of(frame, "green")).any(), "laid the world's gap clear of the film's objects"


def test_a_first_scene_moves_only_what_its_sentence_names() -> None:
    """An object the caption does not name (a model's fault) is no placement to make room for."""
    sentences = ["a red circle stays still on a gray background", "the red circle moves to the right"]
    drawn = _clip("gray", [Thing("red", "circle", 0.24, 0.8, 0.3), Thing("yellow", "square", 0.16, 0.5, 0.8)], ("still", "still"))
    last = read_clip(room_for(drawn, sentences, 0))[-1].objects
    assert last["red"].x < 0.5
    assert abs(last["yellow"].x - 0.5) < 0.01 and abs(last["yellow"].y - 0.8) < 0.01


def test_nothing_to_ask_leaves_the_event() -> None:
    drawn = _clip("ocean", [Thing("white", "triangle", 0.24, 0.8, 0.3)], ("down",))
    for sentences in (["a white triangle moves down over the ocean"], ["a white triangle moves down over the ocean", "the white triangle does a little dance"]):
        assert np.array_equal(room_for(drawn, sentences, 0), drawn)


def test_a_story_can_be_planned_on_from_a_state() -> None:
    start = State("night", (Thing("red", "circle", 0.24, 0.3, 0.5),))
    (event,) = plan_story([parse("the red circle moves to the right")], start=start, check_legible=False)
    assert event.start.things == start.things
    with pytest.raises(InfeasibleError, match="sets a whole new scene"):
        plan_story([parse("a red circle moves up at night")], start=start)
