"""The Shapes world obeys its own judge, and the judge catches every kind of wrong clip."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kinema.world import (
    InfeasibleError,
    judge,
    parse,
    plan_story,
    random_event,
    random_story,
    render_event,
    render_story,
)
from kinema.world.judge import read_frame, classify
from kinema.world.render import render_frame
from kinema.world.scene import Event, State, Thing
from kinema.world.language import caption
from kinema.world.spec import BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES, ObjectSpec, SceneSpec


def _frames(events: list[Event], size: int = 64) -> np.ndarray:
    return np.concatenate([render_event(e, size) for e in events])


@pytest.mark.parametrize("kind", ["one object", "two objects", "camera"])
def test_ground_truth_scenes_all_pass(kind: str) -> None:
    rng = np.random.default_rng({"one object": 1, "two objects": 2, "camera": 3}[kind])
    failures = []
    for _ in range(400):
        spec, event = random_event(rng, kind)
        verdict = judge(render_event(event), spec)
        if not verdict.passed:
            failures.append((spec, [str(r) for r in verdict.reasons]))
    assert not failures, failures[:3]


def test_ground_truth_stories_all_pass() -> None:
    rng = np.random.default_rng(4)
    for _ in range(25):
        sentences, events = random_story(rng, 12)
        verdict = judge(_frames(events), sentences)
        assert verdict.passed, verdict.report()


def test_story_of_sixty_sentences_renders_and_passes() -> None:
    sentences, events = random_story(np.random.default_rng(5), 60)
    frames = _frames(events)
    assert frames.shape == (960, 64, 64, 3)
    verdict = judge(frames, sentences)
    assert verdict.passed, verdict.report()
    assert len(verdict.events) == 60 and len(verdict.boundaries) == 59


def test_every_one_object_caption_renders_and_passes() -> None:
    """Each size, shape and motion WORLD.md names, and each camera move, can be acted out
    (a small shape that shrinks ends at 0.16 / 1.75 of the frame) and reads right."""
    specs = [SceneSpec("black", (ObjectSpec("red", shape, motion, size),)) for size in SIZES for shape in SHAPES for motion in MOTIONS]
    specs += [SceneSpec("black", (ObjectSpec("red", shape, "still", size),), camera) for size in SIZES for shape in SHAPES for camera in ("in", "out")]
    for spec in specs:
        for seed in range(3):
            frames = np.concatenate(list(render_story([spec], seed=seed)))
            assert judge(frames, spec).passed, (caption(spec), seed)


@pytest.mark.parametrize("size", [48, 96, 128])
def test_renders_at_other_sizes(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(30):
        spec, event = random_event(rng, "two objects")
        frames = render_event(event, size)
        assert frames.shape == (16, size, size, 3)
        assert judge(frames, spec).passed


def test_edges_are_anti_aliased_and_fill_is_flat() -> None:
    spec = parse("a large red circle stays still on a black background")
    frames = next(render_story(spec, seed=0))
    colours = {tuple(c) for c in frames[0].reshape(-1, 3)}
    assert (220, 40, 40) in colours and (0, 0, 0) in colours
    blends = [c for c in colours if c not in {(220, 40, 40), (0, 0, 0)}]
    assert len(blends) >= 3, "edge pixels should blend object and background"


def test_night_has_twelve_stars_and_zoom_moves_them() -> None:
    event = Event(State("night", (), 1.0, star_seed=7), ())
    first = render_event(event)[0]
    star = np.all(first == (150, 150, 190), axis=-1)
    assert star.sum() == 12
    zoomed = replace(event, start=replace(event.start, things=(Thing("red", "circle", 0.2, 0.5, 0.5),)), actions=("still",), camera="in")
    frames = render_event(zoomed)
    assert not np.array_equal(np.all(frames[0] == (150, 150, 190), -1), np.all(frames[-1] == (150, 150, 190), -1))


def test_zoom_carries_over_to_later_events() -> None:
    events = plan_story([parse(s) for s in ["a small red square stays still at night", "the camera zooms in", "the red square moves up"]], seed=1)
    sizes = [read_frame(classify(render_event(e)[0][None])[0]).objects["red"].size for e in events]
    assert sizes[1] == pytest.approx(sizes[0], rel=0.1)
    assert sizes[2] == pytest.approx(1.6 * sizes[0], rel=0.1), "after a zoom in, objects stay larger"


def test_impossible_story_is_refused_clearly() -> None:
    with pytest.raises(InfeasibleError, match="no way to act out"):
        plan_story([parse(s) for s in ["a large red circle stays still at night", "the camera zooms in", "the camera zooms in", "the camera zooms in"]])


# ---------------------------------------------------------------- wrong clips fail, for the right reason


def _scenes(kind: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [random_event(rng, kind) for _ in range(n)]


def _other(options, current):
    return next(o for o in options if o != current)


def test_wrong_colour_fails() -> None:
    for spec, event in _scenes("one object", 40, 10):
        thing = event.start.things[0]
        wrong = replace(event, start=replace(event.start, things=(replace(thing, color=_other(COLORS, thing.color)),)))
        assert {"missing", "extra"} <= judge(render_event(wrong), spec).codes()


def test_wrong_shape_fails() -> None:
    for spec, event in _scenes("one object", 40, 11):
        thing = event.start.things[0]
        for shape in SHAPES:
            if shape == thing.shape:
                continue
            wrong = replace(event, start=replace(event.start, things=(replace(thing, shape=shape),)))
            assert judge(render_event(wrong), spec).codes() == {"shape"}, (spec, shape)


def test_wrong_direction_fails() -> None:
    opposite = {"right": "left", "left": "right", "up": "down", "down": "up", "grows": "shrinks", "shrinks": "grows", "bounces": "still", "still": "right"}
    checked = 0
    for spec, event in _scenes("one object", 200, 12):
        wrong = replace(event, actions=(opposite[event.actions[0]],))
        try:
            wrong.check()
        except InfeasibleError:
            continue  # the opposite move would leave the frame: no clip to judge
        assert judge(render_event(wrong), spec).codes() == {"motion"}, spec
        checked += 1
    assert checked >= 40


def test_jitter_is_not_a_bounce() -> None:
    """An object that wobbles a pixel up and down stays still; it does not bounce."""
    spec = parse("a red square stays still on a gray background")
    frames = np.stack([render_frame("gray", [Thing("red", "square", 0.24, 0.5, 0.5 + 0.012 * (-1) ** i)], 64) for i in range(16)])
    assert judge(frames, spec).passed
    bounces = parse("a red square bounces on a gray background")
    assert judge(frames, bounces).codes() == {"motion"}


def test_wrong_camera_fails() -> None:
    for spec, event in _scenes("camera", 30, 13):
        wrong = replace(event, camera=_other(["in", "out"], event.camera))
        try:
            wrong.check()
        except InfeasibleError:
            continue
        assert judge(render_event(wrong), spec).codes() == {"motion"}


def test_wrong_background_fails() -> None:
    for spec, event in _scenes("two objects", 30, 14):
        wrong = replace(event, start=replace(event.start, background=_other(BACKGROUNDS, event.start.background)))
        codes = judge(render_event(wrong), spec).codes()
        assert "background" in codes, spec


def test_missing_object_fails() -> None:
    for spec, event in _scenes("two objects", 30, 15):
        wrong = replace(event, start=replace(event.start, things=event.start.things[:1]), actions=event.actions[:1])
        assert judge(render_event(wrong), spec).codes() == {"missing"}


def test_extra_object_fails() -> None:
    for spec, event in _scenes("two objects", 30, 16):
        one = SceneSpec(spec.background, spec.objects[:1])
        assert judge(render_event(event), one).codes() == {"extra"}


@pytest.mark.parametrize("fault", ["extra", "missing", "background"])
def test_one_bad_frame_fails(fault: str) -> None:
    """WORLD.md's rules hold in every frame: one middle frame with an unnamed object, without
    the named one, or on another background fails the clip."""
    for spec, event in _scenes("two objects", 10, 18):
        caption = SceneSpec(spec.background, spec.objects[:1])
        named = replace(event, start=replace(event.start, things=event.start.things[:1]), actions=event.actions[:1])
        bad = {
            "extra": event,
            "missing": replace(event, start=replace(event.start, things=()), actions=()),
            "background": replace(named, start=replace(named.start, background=_other(BACKGROUNDS, spec.background))),
        }[fault]
        frames = render_event(named)
        assert judge(frames, caption).passed
        frames[7] = render_event(bad)[7]
        assert judge(frames, caption).codes() == {fault}, spec


def test_jump_at_story_boundary_fails() -> None:
    rng = np.random.default_rng(17)
    checked = 0
    while checked < 20:
        sentences, events = random_story(rng, 2)
        things = events[1].start.things
        if not things:
            continue
        moved = tuple(replace(t, x=t.x + 0.15 * (1 if t.x < 0.5 else -1)) for t in things)
        jumped = replace(events[1], start=replace(events[1].start, things=moved))
        try:
            jumped.check()
        except InfeasibleError:
            continue
        verdict = judge(_frames([events[0], jumped]), sentences)
        assert "jump" in verdict.codes(), verdict.report()
        assert not verdict.boundaries[0].passed
        checked += 1


def test_object_popping_up_or_vanishing_at_a_boundary_fails() -> None:
    first = parse("a red circle stays still on a gray background")
    red = Thing("red", "circle", 0.24, 0.3, 0.5)
    base = Event(State("gray", (red,)), ("still",))
    # a blue square pops up although the second sentence only changes the background
    with_blue = Event(State("black", (red, Thing("blue", "square", 0.24, 0.75, 0.5))), ("still", "still"))
    verdict = judge(_frames([base, with_blue]), [first, parse("the scene changes to a black background")])
    assert "appeared" in verdict.codes()
    # ...and is fine when the sentence says it appears
    verdict = judge(_frames([base, replace(with_blue, start=replace(with_blue.start, background="gray"), appeared=("blue",))]), [first, parse("a blue square appears")])
    assert verdict.passed, verdict.report()
    # the red circle vanishes between events although no sentence says so
    verdict = judge(_frames([base, Event(State("gray", ()), ())]), [first, parse("the red circle stays still")])
    assert {"vanished", "missing"} <= verdict.codes()
