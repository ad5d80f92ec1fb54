"""A story's continuity (kinema.data.continuity): what a sentence leaves of the film, found
in the film's last frame and laid over the next event."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from kinema.data.continuity import LEAST, carry_objects, color_word, core_color, hold, keep_backdrop, largest_of, lay_on, leaves_backdrop, objects_of, painted_out, rim, shape_caption, steadied, story_casts, zoomed
from kinema.world.judge import color_pixels, judge
from kinema.world.language import caption, parse
from kinema.world.render import render_event, render_frame
from kinema.world.sample import random_event, random_story, render_story
from kinema.world.scene import GAP, Thing
from kinema.world.spec import GROWTH, SIZES, ZOOM, AppearSentence, DisappearSentence, MoveSentence, ObjectSpec, SceneSpec


def test_a_storys_cast_gains_what_appears_and_loses_what_disappears() -> None:
    story = ["a red circle moves up and a blue square stays still in the forest", "a yellow triangle appears", "the camera zooms in", "the red ball vanishes", "the blue square moves up"]
    assert story_casts(story) == [None, {"red", "blue"}, {"red", "blue", "yellow"}, {"red", "blue", "yellow"}, {"blue", "yellow"}]
    assert story_casts(["a plaid circle moves up", "the red circle moves up"]) == [None, None]
    assert story_casts(["a red circle moves up at night", "a plaid thing happens", "the red circle moves up"]) == [None, {"red"}, None]


def test_a_sentence_holds_the_cast_it_does_not_name() -> None:
    """On the world's own films: "the red circle moves up" holds every other object of the
    cast, whole, and names the red one; laid over an event, the held objects' pixels are the
    last frame's and the rest is the event's. An object outside the cast (a fault of the
    film) is not held; a zoom or an unreadable sentence holds nothing."""
    rng, checked = np.random.default_rng(7), 0
    while checked < 12:
        sentences, _ = random_story(rng, 4)
        texts = [caption(s) for s in sentences]
        events, casts = list(render_story(sentences, seed=checked)), story_casts(texts)
        for k in range(1, len(texts)):
            meaning, last = sentences[k], events[k - 1][-1]
            if not isinstance(meaning, (MoveSentence, DisappearSentence, AppearSentence)) or len(casts[k]) < 2 - isinstance(meaning, AppearSentence):
                continue
            held = hold(texts[k], casts[k], last, rigid=True)
            colors = sorted(casts[k])
            for color, pixels in zip(colors, color_pixels(last, colors)):
                if color == getattr(meaning, "color", None):
                    assert pixels.any() and (held.named >= pixels).all() and not (held.held & pixels).any(), texts[k]
                else:
                    assert (held.held >= pixels).all() and not (held.named & pixels).any(), texts[k]
            laid = held.apply(events[k])
            assert (laid[:, held.kept] == last[held.kept]).all()
            if held.rigid is None:
                assert (laid[:, ~held.kept] == events[k][:, ~held.kept]).all()
            else:  # the film's own object where the world drew it, to within a pixel, and as large (a vanishing one shrinks away with it)
                for ours, world in zip(*(color_pixels(e, [held.rigid])[0] for e in (laid, events[k]))):
                    assert abs(math.sqrt(ours.sum()) - math.sqrt(world.sum())) <= 1.5, texts[k]
                    if world.sum() >= LEAST:
                        assert np.abs(np.subtract(ndimage.center_of_mass(ours), ndimage.center_of_mass(world))).max() <= 1, texts[k]
            checked += 1
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[10:20, 10:20], frame[40:50, 40:50] = (50, 90, 240), (60, 200, 60)  # a blue square; a green one the story never had
    frame[10:20, 40:50] = (220, 50, 50)  # and the red object the sentence names
    held = hold("the red circle moves up", frozenset({"red", "blue"}), frame)
    assert held.held[10:20, 10:20].all() and held.held.sum() == 100 and held.named.sum() == 100 and not held.new_backdrop and held.enters is None
    alone = held.alone()  # the held blue square painted over with the background, the rest as it was
    assert (alone[:30, :30] == 0).all() and (alone[:, 30:] == frame[:, 30:]).all()
    frame[10:20, 40:50] = 0  # the film has lost its red object: the sentence brings it back, as it moves
    lost = hold("the red circle moves up", frozenset({"red", "blue"}), frame)
    assert lost.held.sum() == 100 and not lost.named.any()
    assert parse(lost.entrance) == SceneSpec("black", (ObjectSpec("red", "circle", "up"),))
    assert (lost.frame[:30, :30] == frame[:30, :30]).all() and (lost.frame[30:] == 0).all(), "the green fault painted out"
    assert hold("the camera zooms in", frozenset({"blue"}), frame) is None
    assert hold("a plaid thing happens", frozenset({"blue"}), frame) is None
    assert hold("the blue square grows", frozenset({"blue"}), frame) is None  # nothing else of the cast to hold
    assert hold("the blue square moves up", frozenset({"blue"}), frame) is None and hold("the blue square moves up", frozenset({"blue"}), frame, rigid=True).rigid == "blue"  # unless the film's own square is carried


def test_a_moved_object_is_the_films_own_along_the_path_the_model_draws() -> None:
    """"The red square moves to the right": the model says where (the centre of the red object
    it draws in each frame; a frame that lost it, between its neighbours), the film says what
    (its last frame's square, whole). A model that rounds the square, and loses it for two
    frames, still shows the film's square in every frame, moving as drawn; the film's only
    object is carried too."""
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[10:20, 20:30], frame[40:50, 40:50] = (220, 50, 50), (50, 90, 240)  # the red square, a blue one held
    ys, xs = np.mgrid[:64, :64]
    drawn = np.zeros((16, 64, 64, 3), np.uint8)
    for t in range(16):
        if t not in (6, 7):
            drawn[t][(ys - 14.5) ** 2 + (xs - 24.5 - 2 * t) ** 2 <= 25] = (220, 50, 50)  # a disc, 2 px a frame to the right
    held = hold("the red square moves to the right", frozenset({"red", "blue"}), frame, rigid=True)
    assert held.rigid == "red" and hold("the red square moves to the right", frozenset({"red", "blue"}), frame).rigid is None
    for t, laid in enumerate(held.apply(drawn)):
        red = largest_of(laid, "red")
        assert red.sum() == 100 and red[10:20, 20 + 2 * t : 30 + 2 * t].all(), t  # the square, where the disc is (or would be)
        assert (laid[red] == (220, 50, 50)).all() and (laid[~red & (laid != (50, 90, 240)).any(-1)] == 0).all()  # nothing of the disc left
    assert hold("the red square moves to the right", frozenset({"red"}), np.where(frame == (50, 90, 240), 0, frame).astype(np.uint8), rigid=True).rigid == "red"


def test_an_object_that_grows_or_shrinks_is_the_films_own_scaled_as_the_model_draws() -> None:
    """"The red square shrinks": the model shrinks a disc where the square was, and too fast
    (gone in its last four frames). Carried (`rigid`), each frame shows the film's square
    scaled about its centre at the rate drawn, kept within the world's (x1/1.75 over the
    event): it stays a square, the event passes, and the held triangle stays as it was. A
    model that grows the disc to three times its size grows the square x1.75."""
    first, cast = "a red square stays still and a yellow triangle moves up on a gray background", frozenset({"red", "yellow"})
    ys, xs = np.mgrid[:64, :64]
    for sentence, radius, change in (("the red square shrinks", lambda t: 1 - t / 12, 1 / GROWTH), ("the red square grows", lambda t: 1 + 2 * t / 15, GROWTH)):
        world = np.concatenate(list(render_story([first, sentence], seed=3)))  # the world leaves the square room to grow
        film, square = world[15], largest_of(world[15], "red")
        cy, cx = ndimage.center_of_mass(square)
        half = math.sqrt(square.sum()) / 2
        drawn = np.repeat(painted_out(film, rim(square))[None], 16, axis=0)  # the square painted out, a disc drawn in its place
        for t, frame in enumerate(drawn):
            frame[(ys - cy) ** 2 + (xs - cx) ** 2 <= (half * radius(t)) ** 2] = film[square][0]
        assert not judge(np.concatenate([world[:16], drawn]), [first, sentence]).events[1].passed, sentence
        held = hold(sentence, cast, film, rigid=True)
        assert held.rigid == "red" and held.scale == change and hold(sentence, cast, film).rigid is None
        event = held.apply(drawn)
        assert judge(np.concatenate([world[:16], event]), [first, sentence]).passed, sentence
        sides = [math.sqrt(largest_of(frame, "red").sum()) for frame in event]
        assert sides[0] == 2 * half and abs(sides[-1] / sides[0] - change) < 0.1 and all(np.diff(sides) * (change - 1) > -0.5), sentence  # steady, within rounding
        triangle = rim(largest_of(film, "yellow"))
        assert (event[:, triangle] == film[triangle]).all(), sentence


def test_an_object_drawn_from_text_keeps_one_shape_along_its_path() -> None:
    """A model draws a moving square once a frame, each time with a corner rounded off (another
    one each frame) and once not at all: steadied, every frame shows the whole square, where
    each frame drew it (the lost frame between its neighbours). A zoom and a sentence the
    world cannot read are left as drawn."""
    clip = np.zeros((16, 64, 64, 3), np.uint8)
    for t in range(16):
        if t != 9:
            clip[t, 20:30, 10 + t : 20 + t] = (220, 50, 50)
            y, x = (20, 29)[t % 2], (10 + t, 19 + t)[t // 2 % 2]
            clip[t, y, x] = clip[t, y + (1 if y == 20 else -1), x] = clip[t, y, x + (1 if x == 10 + t else -1)] = 0
    for t, frame in enumerate(steadied(clip, "a red square moves to the right in the desert")):
        assert largest_of(frame, "red").sum() == 100 and (frame[20:30, 10 + t : 20 + t] == (220, 50, 50)).all(), t
    for sentence in ("the camera zooms in on a red square in the desert", "a plaid thing happens"):
        assert (steadied(clip, sentence) == clip).all(), sentence


def test_an_object_that_grows_from_text_is_one_drawing_scaled_as_drawn() -> None:
    """A model draws a growing square with a corner cut off (another one each frame), wobbling
    a pixel about its place, and grows it x2 where the world grows an object x1.75: steadied,
    every frame shows one square, no corner cut, at the middle of the places drawn, growing
    steadily to x1.75. A shrink is the same drawing taken at its largest, where its frames
    begin."""
    clip = np.zeros((16, 64, 64, 3), np.uint8)
    ys, xs = np.mgrid[:64, :64]
    for t in range(16):
        side, wobble = 10 + round(10 * t / 15), t % 2
        top = left = 32 - side // 2 + wobble
        clip[t, top : top + side, left : left + side] = (220, 50, 50)
        dy, dx = (ys - top, xs - left) if t % 4 < 2 else (top + side - 1 - ys, left + side - 1 - xs)
        dx = dx if t % 2 else side - 1 - dx
        clip[t][(dy >= 0) & (dx >= 0) & (dy + dx < side // 3)] = 0  # a corner cut off
    fill = lambda red: red.sum() / ((np.ptp(np.nonzero(red)[0]) + 1) * (np.ptp(np.nonzero(red)[1]) + 1))  # noqa: E731
    assert all(fill(largest_of(frame, "red")) < 0.96 for frame in clip)
    for sentence, frames in (("a red square grows in the desert", clip), ("a red square shrinks in the desert", clip[::-1])):
        reds = [largest_of(frame, "red") for frame in steadied(frames, sentence)]
        assert min(fill(red) for red in reds) > 0.97, sentence
        sides = [math.sqrt(red.sum()) for red in reds]
        centres = [ndimage.center_of_mass(red) for red in reds]
        assert abs(max(sides) / min(sides) - 1.75) < 0.1 and np.ptp(centres, axis=0).max() <= 1, (sentence, sides, centres)
        assert all(np.diff(sides) * (1 if "grows" in sentence else -1) > -0.5), (sentence, sides)


def test_an_object_that_stays_still_is_its_steady_drawing_laid_still() -> None:
    """A still square is drawn from "moves to the left" (`shape_caption`), each frame's drawing
    with another corner rounded off: steadied for "stays still", every frame shows the whole
    square at the middle of the drawn path, and nothing of the drawings is left; a zoom, a
    held-out "holds still" and a moving object are drawn from their own words."""
    clip = np.zeros((16, 64, 64, 3), np.uint8)
    for t in range(16):
        clip[t, 20:30, 40 - 2 * t : 50 - 2 * t] = (220, 50, 50)
        y, x = (20, 29)[t % 2], (40 - 2 * t, 49 - 2 * t)[t // 2 % 2]
        clip[t, y, x] = clip[t, y + (1 if y == 20 else -1), x] = clip[t, y, x + (1 if x == 40 - 2 * t else -1)] = 0
    still = "a red square stays still in the desert"
    assert shape_caption(still) == "a red square moves to the left in the desert"
    steady = steadied(clip, still)
    for frame in steady:
        red = largest_of(frame, "red")
        assert red.sum() == 100 and red[20:30, 25:35].all(), "the whole square, at the middle of the path"
        assert (frame[~red] == 0).all(), "nothing of the drawings is left"
    for sentence in ("the camera zooms in on a red square that stays still in the desert", "a red square holds still in the desert", "a red square moves up in the desert"):
        assert shape_caption(sentence) == sentence


def test_a_small_object_is_drawn_medium_sized_and_scaled_down() -> None:
    """A small square moving right is drawn from "a medium ..." (`shape_caption`): steadied for
    the small sentence, every frame shows one square of the world's small size, at the centre
    each frame drew the medium one, read as a square, and nothing of the medium drawings is
    left; the judge passes it as the small sentence."""
    sentence = "a small red square moves to the right on a black background"
    assert shape_caption(sentence) == "a medium red square moves to the right on a black background"
    (drawn,) = render_story(shape_caption(sentence), seed=4)
    steady = steadied(drawn, sentence)
    for frame, was in zip(steady, drawn):
        red, before = largest_of(frame, "red"), largest_of(was, "red")
        assert abs(math.sqrt(red.sum()) - SIZES["small"] * 64) <= 1, red.sum()
        assert np.abs(np.array(ndimage.center_of_mass(red)) - ndimage.center_of_mass(before)).max() <= 1
        assert (frame[~rim(red)] == 0).all(), "nothing of the medium drawing is left"
    assert judge(steady, sentence).passed


def test_a_zoom_scales_the_films_own_frame_as_the_model_zooms() -> None:
    """"The camera zooms out" after a square and a triangle: the model zooms out, but draws the
    shrinking triangle as a disc. Carried (`zoom`), each frame is the film's last frame scaled
    as the model's objects shrink: the triangle stays a triangle and the square a square, both
    shrink as the world's zoom does and the event passes; not carried, nothing is held."""
    story = ["a red square stays still and a yellow triangle moves up on a gray background", "the camera zooms out"]
    world = np.concatenate(list(render_story(story, seed=3)))
    film, drawn = world[15], world[16:32].copy()
    ys, xs = np.mgrid[:64, :64]
    for frame in drawn:  # the triangle drawn as a disc of its area, where it is
        yellow = largest_of(frame, "yellow")
        cy, cx = ndimage.center_of_mass(yellow)
        frame[yellow] = (100, 100, 100)
        frame[(ys - cy) ** 2 + (xs - cx) ** 2 <= yellow.sum() / math.pi] = (240, 220, 50)
    assert not judge(np.concatenate([world[:16], drawn]), story).events[1].passed
    held = hold(story[1], frozenset({"red", "yellow"}), film, zoom=True)
    assert held.zoom and hold(story[1], frozenset({"red", "yellow"}), film) is None
    zoomed = held.apply(drawn)
    assert (zoomed[0] == film).all(), "the event starts as the film left it"
    assert judge(np.concatenate([world[:16], zoomed]), story).passed
    for color in ("red", "yellow"):
        sizes = [largest_of(frame, color).sum() for frame in zoomed]
        assert sizes[-1] < sizes[0] / 1.25**2, color


def test_a_zoom_is_measured_on_the_objects_the_model_keeps() -> None:
    """A model that draws the film's red square into orange as it zooms out, and leaves a red
    speck in one frame: the zoom is measured on the triangle, which it keeps, and the carried
    film still shrinks as the world's zoom does (the speck, read as the square, would have
    sent the film to a tenth of its size)."""
    story = ["a red square stays still and a yellow triangle moves up on a gray background", "the camera zooms out"]
    world = np.concatenate(list(render_story(story, seed=3)))
    film, drawn = world[15], world[16:32].copy()
    for t, frame in enumerate(drawn):
        if t >= 2:
            frame[largest_of(frame, "red")] = (250, 140, 30)
        if t == 4:
            frame[2:6, 2:6] = (220, 40, 40)
    zoomed = hold(story[1], frozenset({"red", "yellow"}), film, zoom=True).apply(drawn)
    assert judge(np.concatenate([world[:16], zoomed]), story).passed
    for color in ("red", "yellow"):
        assert largest_of(zoomed[-1], color).sum() < largest_of(film, color).sum() / 1.25**2, color


def test_a_zoom_whose_objects_the_model_recolours_is_measured_on_all_it_draws() -> None:
    """A model that zooms out and draws both of the film's objects in other colours (red to
    orange, yellow to white) from the second frame on: no colour of the film is left to
    measure the zoom by, so it is measured on all the objects it draws, and the carried film
    shrinks as the world's zoom does (left as drawn, the film's objects would be lost)."""
    story = ["a red square stays still and a yellow triangle moves up on a gray background", "the camera zooms out"]
    world = np.concatenate(list(render_story(story, seed=3)))
    film, drawn = world[15], world[16:32].copy()
    for frame in drawn[1:]:
        frame[largest_of(frame, "red")] = (250, 140, 30)
        frame[largest_of(frame, "yellow")] = (245, 245, 245)
    zoomed = hold(story[1], frozenset({"red", "yellow"}), film, zoom=True).apply(drawn)
    assert judge(np.concatenate([world[:16], zoomed]), story).passed
    for color in ("red", "yellow"):
        assert largest_of(zoomed[-1], color).sum() < largest_of(film, color).sum() / 1.25**2, color


def test_a_small_objects_colour_is_read_from_its_core() -> None:
    """A small triangle a zoom out has left six pixels wide, its edge as soft as a decoder
    draws it, is mostly edge: the median of its pixels is a dark cyan nearer green. Read by
    its core (`core_color`), it is the film's cyan triangle, held when a circle appears, where
    read by its median it would be a fault, painted out."""
    sharp = render_frame("black", [Thing("cyan", "triangle", 0.1, 0.3, 0.3)], 64)
    tiny = np.rint(ndimage.uniform_filter(sharp.astype(np.float32), size=(2, 2, 1))).astype(np.uint8)
    labels, n = objects_of(tiny)
    assert n == 1 and color_word(tiny[labels == 1]) == "green", "the median reads another colour"
    assert core_color(tiny, labels == 1) == "cyan" and (largest_of(tiny, "cyan") == (labels == 1)).all()
    held = hold("a blue circle appears", frozenset({"cyan", "blue"}), tiny)
    assert held.held[labels == 1].all(), "the triangle is held"


def test_a_zoom_stays_within_the_worlds_zoom_its_sentence_names() -> None:
    """A model's zoom out that grows its objects (to x3, as the MaskGIT once drew one) is not
    carried as a zoom in, and a zoom in drawn to x3 is carried to the world's x1.6 and no
    further: a film scaled past it stays that way, blurred, for the rest of the story."""
    film = render_frame("gray", [Thing("red", "square", 0.18, 0.4, 0.5), Thing("yellow", "triangle", 0.18, 0.62, 0.5)], 64)
    centre = np.array([31.5, 31.5])
    grown = np.stack([  # the film scaled about the centre from x1 to x3
        np.stack([ndimage.affine_transform(film[..., c], np.eye(2) / k, offset=centre - centre / k, order=0, mode="nearest") for c in range(3)], -1)
        for k in np.linspace(1, 3, 16)
    ])
    assert largest_of(zoomed(grown, film)[-1], "red").sum() > 4 * largest_of(film, "red").sum(), "told no direction, the zoom is carried as drawn"
    for camera, most in (("in", ZOOM), ("out", 1.0)):
        carried = hold(f"the camera zooms {camera}", frozenset({"red", "yellow"}), film, zoom=True)
        assert carried.zoom == camera
        side = math.sqrt(largest_of(carried.apply(grown)[-1], "red").sum() / largest_of(film, "red").sum())
        assert most - 0.08 < side < most + 0.08, (camera, side)


def test_objects_carried_onto_a_new_background_are_the_worlds_scene_change() -> None:
    """A scene change keeps the film's objects: lifted off the old background and laid on the
    new one, each edge pixel re-mixed, they give the world's own rendering of the change to
    within a level, whatever objects the new event had drawn (here the right ones, shifted)."""
    story = ["a red circle moves up and a blue triangle stays still in the forest", "the red circle moves to the right", "the scene changes to the desert"]
    events = list(render_story(story, seed=3))
    held = hold(story[2], story_casts(story)[2], events[1][-1])
    assert held.new_backdrop and not held.named.any() and held.held.sum() > 100
    for drawn in (events[2], np.roll(events[2], 6, axis=2)):
        assert np.abs(held.apply(drawn).astype(int) - events[2]).max() <= 1
    assert np.abs(carry_objects(events[2], events[1][-1], held.held).astype(int) - events[2]).max() <= 1


def test_an_event_drawn_on_another_background_is_lifted_onto_the_films() -> None:
    """Only a scene change changes the background: an event a model drew on another one (the
    world's own event, drawn in the desert where the film is in the forest) is lifted onto the
    film's, giving the world's event to within a level. On a grainy background (a diffusion
    model's leftover noise) each object is still found as itself, not the grain joined into
    one region, and the background's median moves to the film's."""
    story = ["a red circle moves up and a blue triangle stays still in the forest", "the red circle moves to the right"]
    forest = list(render_story(story, seed=3))
    desert = list(render_story([story[0].replace("forest", "desert"), story[1]], seed=3))
    assert leaves_backdrop(story[1]) and not leaves_backdrop("the scene changes to the desert") and not leaves_backdrop(story[0])
    assert np.abs(desert[1].astype(int) - forest[1]).max() > 100
    assert np.abs(keep_backdrop(desert[1], forest[0][-1]).astype(int) - forest[1]).max() <= 1
    grainy = np.clip(desert[1] + np.random.default_rng(0).normal(0, 8, desert[1].shape), 0, 255).astype(np.uint8)
    assert objects_of(grainy[0])[1] == objects_of(desert[1][0])[1] == 2
    lifted = keep_backdrop(grainy, forest[0][-1])
    assert np.abs(np.median(lifted.reshape(16, -1, 3), axis=1) - np.median(forest[1].reshape(16, -1, 3), axis=1)).max() <= 1


def test_an_appearing_object_drawn_alone_is_laid_on_the_film() -> None:
    """"A yellow square appears" holds the film's objects and brings a yellow square, drawn
    alone by the caption `entrance` names. Laid on the film's last frame, the square as the
    world draws it gives the world's own event (the square pops in and stays still); drawn
    on the film's red circle, it is moved to a free place; with no yellow square, None."""
    story = ["a red circle moves up in the forest", "a yellow square appears"]
    events = list(render_story(story, seed=2))
    held = hold(story[1], story_casts(story)[1], events[0][-1])
    assert held.entrance == "a yellow square stays still in the forest"
    assert held.held.sum() > 100 and not held.named.any()
    assert np.array_equal(held.enter(events[1]), events[1])
    assert judge(np.concatenate(events[:1] + [held.enter(events[1])]), story).passed
    square, circle = largest_of(events[1][0], "yellow"), held.held
    (sy, sx), (cy, cx) = (np.argwhere(m).mean(0).round().astype(int) for m in (square, circle))
    moved = held.enter(np.roll(events[1], (cy - sy, cx - sx), axis=(1, 2)))  # drawn on top of the circle
    assert all(clear_of(largest_of(frame, "yellow"), circle, square.sum()) for frame in moved), "moved to a free place"
    assert held.enter(events[0]) is None, "no yellow square drawn"


def test_a_disappearing_object_is_all_its_event_draws() -> None:
    """"The red circle disappears": the event keeps the film's other objects and draws only
    the red circle shrinking away. A mark of another colour the model drew as it shrank (a
    blue blob here) is painted out with the background, which gives the world's own event;
    what the film already had stays, even a fault no sentence brought (a green blob), so
    that nothing vanishes between events."""
    story = ["a red circle moves up and a white square stays still in the forest", "the red circle disappears"]
    events = list(render_story(story, seed=5))
    drawn = events[1].copy()
    drawn[9:12, 40:46, 50:56] = (50, 90, 240)  # a blue mark in three frames
    held = hold(story[1], story_casts(story)[1], events[0][-1])
    assert held.vanishing == "red" and held.named.any() and held.held.any()
    laid = held.apply(drawn)
    assert np.abs(laid.astype(int) - events[1]).max() <= 1
    assert judge(np.concatenate([events[0], laid]), story).passed
    film = events[0][-1].copy()
    film[4:9, 4:9] = drawn[:, 4:9, 4:9] = (60, 200, 60)  # a green fault the film carries in, drawn again
    laid = hold(story[1], story_casts(story)[1], film).apply(drawn)
    assert (laid[:, 4:9, 4:9] == (60, 200, 60)).all() and (np.abs(laid.astype(int) - events[1])[:, 20:] <= 1).all()
    alone = ["a red circle moves up in the forest", "the red circle disappears"]  # nothing else to hold: still a hold
    held = hold(alone[1], story_casts(alone)[1], next(iter(render_story(alone, seed=5)))[-1])
    assert held is not None and held.vanishing == "red" and not held.held.any()


def test_a_disappearing_object_is_the_films_own_shrinking_away() -> None:
    """"The red circle disappears", drawn as a square that shrinks away in ten frames: carried
    (`rigid`), it is the film's own circle scaled about its centre at the rate drawn, kept
    within the world's (to nothing over the event): a circle to the last, gone by the end,
    and the event passes where the drawing fails."""
    story = ["a red circle moves up and a white square stays still in the forest", "the red circle disappears"]
    events = list(render_story(story, seed=5))
    film = events[0][-1]
    circle = largest_of(film, "red")
    cy, cx = (int(v) for v in np.rint(ndimage.center_of_mass(circle)))
    half = math.sqrt(circle.sum()) / 2
    drawn = np.repeat(painted_out(film, rim(circle))[None], 16, axis=0)
    for t, frame in enumerate(drawn):
        r = round(half * (1 - t / 10))
        frame[cy - r : cy + r, cx - r : cx + r] = film[circle][0]
    assert not judge(np.concatenate([events[0], drawn]), story).events[1].passed
    held = hold(story[1], story_casts(story)[1], film, rigid=True)
    assert held.vanishing == held.rigid == "red" and held.scale == 0
    laid = held.apply(drawn)
    assert judge(np.concatenate([events[0], laid]), story).passed
    sides = [math.sqrt(largest_of(frame, "red").sum()) for frame in laid]
    assert sides[0] == 2 * half and sides[-1] == 0 and all(np.diff(sides) <= 0.5)
    assert (laid[:, rim(largest_of(film, "white"))] == film[rim(largest_of(film, "white"))]).all()


def test_a_scene_change_on_an_empty_stage_shows_its_background_alone() -> None:
    """Once every object has disappeared, "the scene changes to the desert" has nothing to
    carry over: whatever the model draws on the new background (a red blob here) is painted
    over with it, which gives the world's own event."""
    story = ["a red circle moves up in the forest", "the red circle disappears", "the scene changes to the desert"]
    events = list(render_story(story, seed=4))
    drawn = events[2].copy()
    drawn[5:, 30:38, 20:28] = (220, 50, 50)
    held = hold(story[2], story_casts(story)[2], events[1][-1])
    assert held is not None and held.new_backdrop and not held.held.any()
    assert np.abs(held.apply(drawn).astype(int) - events[2]).max() <= 1
    assert judge(np.concatenate(events[:2] + [held.apply(drawn)]), story).passed


def test_a_scenes_second_object_drawn_alone_is_laid_on_the_first() -> None:
    """A two-object scene drawn one object at a time (PhenakiPipeline): each object's clip as
    the world draws it alone, the second laid on the first's frame by frame, gives the world's
    own scene, as no two objects ever come within the world's gap. The second drawn on the
    first one's path is moved clear of it, whole; not drawn at all, or with no free place
    left, it gives None."""
    rng = np.random.default_rng(11)
    for _ in range(6):
        spec, event = random_event(rng, "two objects")
        alone = [render_event(dataclasses.replace(event, start=dataclasses.replace(event.start, things=(thing,)), actions=(action,))) for thing, action in zip(event.start.things, event.actions)]
        clear = np.stack([objects_of(frame)[0] > 0 for frame in alone[0]])
        color = spec.objects[1].color
        assert np.array_equal(lay_on(alone[0], alone[1], color, clear), render_event(event)), caption(spec)
        first, second = event.start.things
        onto = render_event(dataclasses.replace(event, start=dataclasses.replace(event.start, things=(dataclasses.replace(second, x=first.x, y=first.y),)), actions=event.actions[:1]))
        moved = lay_on(alone[0], onto, color, clear)  # drawn on the first object's path: moved off it
        assert all(clear_of(largest_of(frame, color), c, largest_of(o, color).sum()) for frame, c, o in zip(moved, clear, onto)), caption(spec)
        assert lay_on(alone[0], alone[0], color, clear) is None, "no second object drawn"
        assert lay_on(alone[0], onto, color, np.ones_like(clear)) is None, "no free place"


def clear_of(obj: np.ndarray, others: np.ndarray, size: int) -> bool:
    """`obj` [H, W] bool has `size` pixels and lies more than the world's gap from `others`."""
    return obj.sum() == size and not (ndimage.binary_dilation(others, structure=np.ones((3, 3)), iterations=math.ceil(GAP * len(obj))) & obj).any()
