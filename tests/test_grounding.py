"""Grounding (TokenCompose's token loss): which caption words name which object, where
that object is, and a loss on the MaskGIT's cross-attention that binds the two; and
binding negatives (NegCLIP's swapped captions) with the MaskGIT's hinge on them."""

from __future__ import annotations

import numpy as np
import torch

from kinema.data.grounding import OPPOSITE_MOTIONS, WRONG_WAYS, first_object_caption, infill_caption, medium_caption, mirrored_caption, moving_caption, object_words, reversed_motion_caption, second_object_caption, swapped_caption, wrong_way_caption, wrong_way_captions
from kinema.models.phenaki.data import PhenakiData
from kinema.models.phenaki.maskgit import BINDING_MARGIN, MaskGit, MaskGitConfig
from kinema.nn.attention import Attention
from kinema.nn.grounding import grounding_loss
from kinema.text import get_text_encoder
from kinema.tokenizer.cvivit import CViViT, CViViTConfig
from kinema.world.language import MOTION_WORDS, SIZE_WORDS, parse, phrase_spans, uses_heldout


def words_of(caption: str) -> dict[str, list[str]]:
    return {color: [caption[a:b] for a, b in spans] for color, spans in object_words(caption).items()}


def test_phrase_spans_point_at_the_words_the_parser_reads() -> None:
    caption = "A small Crimson ball is bouncing, and a blue square stays still in the forest."
    read = {caption[a:b]: (e.category, e.value) for a, b, e in phrase_spans(caption)}
    assert read["Crimson"] == ("color", "red") and read["ball"] == ("shape", "circle")
    assert read["stays still"] == ("motion", "still") and read["in the forest"] == ("background", "forest")


def test_each_object_gets_its_own_words_and_a_shared_word_belongs_to_neither() -> None:
    assert words_of("a small crimson ball is bouncing and a blue square stays still in the forest") == {
        "red": ["small", "crimson", "ball", "bouncing"],
        "blue": ["blue", "square", "stays still"],
    }
    assert words_of("a red square moves up and a blue square moves up at night") == {"red": ["red"], "blue": ["blue"]}
    assert words_of("the cyan box vanishes") == {"cyan": ["cyan", "box", "vanishes"]}
    assert words_of("the scene changes to the desert") == {} and words_of("the camera zooms in") == {}
    assert words_of("a plaid circle moves up at night") == {}, "a caption the world cannot read grounds nothing"


def test_the_explicit_attention_path_matches_the_fused_kernel() -> None:
    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8, context_dim=12).eval()
    x, context = torch.randn(2, 5, 16), torch.randn(2, 3, 12)
    mask = torch.tensor([[True, True, False], [True, False, False]])[:, None, None, :]
    weights: list[torch.Tensor] = []
    with torch.no_grad():
        out = attn(x, context=context, mask=mask, weights=weights)
        fused = attn(x, context=context, mask=mask)
    assert torch.allclose(out, fused, atol=1e-6)
    assert weights[0].shape == (2, 2, 5, 3) and torch.allclose(weights[0].sum(-1), torch.ones(2, 2, 5))
    assert float(weights[0][1, :, :, 1:].abs().max()) == 0.0, "masked words get no attention"


def test_grounding_loss_is_zero_when_words_are_read_from_their_object_only() -> None:
    tokens = torch.zeros(1, 2, 6, dtype=torch.bool)
    tokens[0, 0, :2], tokens[0, 1, 4:] = True, True  # object 0 on tokens 0-1, object 1 on 4-5
    words = torch.zeros(1, 2, 3, dtype=torch.bool)
    words[0, 0, 0], words[0, 1, 1] = True, True  # word 0 names object 0, word 1 object 1; word 2 neither
    bound = torch.zeros(1, 1, 6, 3)
    bound[0, 0, :2, 0], bound[0, 0, 4:, 1], bound[0, 0, 2:4, 2] = 1.0, 1.0, 1.0
    assert float(grounding_loss([bound], tokens, words)) == 0.0
    swapped = bound[..., [1, 0, 2]]  # each object's tokens read the other's word
    assert float(grounding_loss([swapped], tokens, words)) == 1.0
    assert float(grounding_loss([swapped], tokens, torch.zeros_like(words))) == 0.0, "nothing named, nothing to ground"


def test_training_data_grounds_named_objects_on_their_tokens() -> None:
    tokenizer = CViViT(CViViTConfig.preset("tiny")).eval()
    encoder = get_text_encoder()
    assert PhenakiData(tokenizer, encoder, batch_size=2, seed=4).batch(0).grounding is None, "off unless asked for"
    batch = PhenakiData(tokenizer, encoder, batch_size=16, seed=4, grounding=True).batch(0)
    g = batch.grounding
    assert g.tokens.shape == (16, 2, batch.codes.shape[1]) and g.words.shape == (16, 2, batch.text.shape[1])
    assert int(g.words.any(-1).sum()) >= 8, "most captions name an object"
    for i, caption in enumerate(batch.captions):
        ids = encoder.tokenizer(caption)["input_ids"]
        for k, (color, spans) in enumerate(object_words(caption).items()):
            assert g.tokens[i, k].any() or "disappears" in caption or "vanish" in caption
            assert not g.tokens[i, k].all() and (g.tokens[i, k] <= batch.foreground[i]).all(), "an object's tokens are foreground"
            named = encoder.tokenizer.decode([ids[j] for j in g.words[i, k].nonzero().flatten().tolist()])
            assert color in named or any(caption[a:b].lower() in named for a, b in spans)


def test_the_grounding_loss_teaches_the_maskgit_where_to_read_each_word() -> None:
    """A tiny MaskGIT on one fixed batch, trained on the grounding loss alone: it falls."""
    torch.manual_seed(0)
    tokenizer = CViViT(CViViTConfig.preset("tiny")).eval()
    batch = PhenakiData(tokenizer, get_text_encoder(), batch_size=8, seed=6, grounding=True).batch(0)
    model = MaskGit(MaskGitConfig(fsq_levels=tokenizer.config.fsq_levels, grid=tokenizer.config.grid_size, dim=32, depth=1, heads=2, dim_head=16, cond_drop=0.0))
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    grounding = (batch.grounding.tokens, batch.grounding.words)
    first = None
    for _ in range(40):
        out = model.loss(batch.codes, batch.text, batch.text_mask, batch.context, batch.has_context, grounding=grounding, grounding_weight=1.0)
        optim.zero_grad()
        out["grounding"].backward()
        optim.step()
        first = first or float(out["grounding"].detach())
    assert float(out["grounding"].detach()) < 0.7 * first


def test_a_swapped_caption_binds_the_same_words_the_other_way() -> None:
    caption = "a white circle shrinks and a red square bounces in the desert"
    assert swapped_caption(caption, "shape") == "a white square shrinks and a red circle bounces in the desert"
    assert swapped_caption(caption, "motion") == "a white circle bounces and a red square shrinks in the desert"
    paraphrase = "we see a red box sinking and a cyan disk contracting in the dunes"
    objects = parse(swapped_caption(paraphrase, "shape")).objects
    assert [(o.color, o.shape, o.motion) for o in objects] == [("red", "circle", "down"), ("cyan", "square", "shrinks")]
    assert swapped_caption("an orange triangle shrinks and a purple triangle moves down over the ocean", "shape") is None, "the same shape: nothing to swap"
    assert swapped_caption("a red circle moves up at night", "shape") is None and swapped_caption("the scene changes to the desert", "motion") is None
    assert swapped_caption("a plaid circle moves up and a red square grows at night", "shape") is None, "a caption the world cannot read"


def test_a_reversed_motion_caption_runs_each_one_way_motion_the_other_way() -> None:
    """In the caption's own words (canonical or train paraphrase), every right/left, up/down,
    grows/shrinks becomes its opposite and nothing else changes; other captions have none."""
    from kinema.world.language import caption, paraphrase
    from kinema.world.sample import random_event

    rng = np.random.default_rng(11)
    reversed_ = 0
    for kind in ("one object", "two objects") * 40:
        spec, _ = random_event(rng, kind)
        for text in (caption(spec), paraphrase(spec, rng, split="train")):
            motions = [o.motion for o in spec.objects]
            negative = reversed_motion_caption(text)
            if not any(m in OPPOSITE_MOTIONS for m in motions):
                assert negative is None, text
                continue
            if negative is None:  # a phrase without a partner in the world's tables
                continue
            reversed_ += 1
            meant = parse(negative)
            assert [o.motion for o in meant.objects] == [OPPOSITE_MOTIONS.get(m, m) for m in motions], (text, negative)
            assert [(o.color, o.shape, o.size) for o in meant.objects] == [(o.color, o.shape, o.size) for o in spec.objects]
            assert meant.background == spec.background
    assert reversed_ > 80
    assert reversed_motion_caption("The blue square rises.") == "The blue square sinks."
    assert reversed_motion_caption("a white circle shrinks and a red square bounces in the desert") == "a white circle grows and a red square bounces in the desert"
    assert reversed_motion_caption("the red circle bounces") is None and reversed_motion_caption("the scene changes to the desert") is None
    assert reversed_motion_caption("a plaid circle moves up") is None, "a caption the world cannot read"


def test_a_mirrored_caption_says_what_the_world_shows_in_a_mirror() -> None:
    """The world's clip mirrored left to right passes the judge under the mirrored caption
    (right and left swapped in the caption's own words, nothing else changed), as the clip
    itself passes under the caption: the Shapes world is the same in a mirror."""
    from kinema.world.judge import judge
    from kinema.world.language import caption, paraphrase
    from kinema.world.render import render_event
    from kinema.world.sample import random_event

    rng = np.random.default_rng(12)
    swapped = judged = 0
    for kind in ("one object", "two objects", "camera") * 12:
        spec, event = random_event(rng, kind)
        text = paraphrase(spec, rng, split="train") if rng.random() < 0.5 else caption(spec)
        mirror = mirrored_caption(text)
        if mirror is None:  # a left or right phrase without a partner in the world's tables
            continue
        meant = parse(mirror)
        flip = {"right": "left", "left": "right"}
        assert [o.motion for o in meant.objects] == [flip.get(o.motion, o.motion) for o in spec.objects], (text, mirror)
        assert [(o.color, o.shape, o.size) for o in meant.objects] == [(o.color, o.shape, o.size) for o in spec.objects]
        assert (meant.background, meant.camera) == (spec.background, spec.camera)
        swapped += mirror != text
        clip = render_event(event)
        if judge(clip, spec).passed:
            judged += 1
            assert judge(clip[:, :, ::-1].copy(), mirror).passed, (text, mirror)
    assert swapped >= 5 and judged >= 20
    assert mirrored_caption("a red square drifts left and a blue circle moves to the right at night") == "a red square drifts right and a blue circle moves to the left at night"
    assert mirrored_caption("the red circle bounces") == "the red circle bounces"
    assert mirrored_caption("a plaid circle moves up") is None, "a caption the world cannot read"


def test_a_wrong_way_caption_sends_each_one_way_motion_back_or_across_its_axis() -> None:
    """Each right/left/up/down becomes one of the other three and grows/shrinks its opposite,
    worded as plainly as the caption was (canonical for canonical); nothing else changes, and
    across many draws every wrong way turns up."""
    from kinema.world.language import caption, paraphrase
    from kinema.world.sample import random_event

    rng, draws = np.random.default_rng(12), np.random.default_rng(0)
    seen, sent = set(), 0
    for kind in ("one object", "two objects") * 40:
        spec, _ = random_event(rng, kind)
        for text in (caption(spec), paraphrase(spec, rng, split="train")):
            motions = [o.motion for o in spec.objects]
            negative = wrong_way_caption(text, draws)
            if not any(m in WRONG_WAYS for m in motions):
                assert negative is None, text
                continue
            assert negative is not None, text
            sent += 1
            meant = parse(negative)
            for o, m in zip(meant.objects, motions):
                assert o.motion in WRONG_WAYS[m] if m in WRONG_WAYS else o.motion == m, (text, negative)
                seen.add((m, o.motion))
            assert [(o.color, o.shape, o.size) for o in meant.objects] == [(o.color, o.shape, o.size) for o in spec.objects]
            assert meant.background == spec.background
    assert sent > 80
    assert seen >= {(m, w) for m, ways in WRONG_WAYS.items() for w in ways}, "every wrong way, across the axis too"
    assert wrong_way_caption("a red circle moves to the right", draws) in {"a red circle moves to the left", "a red circle moves up", "a red circle moves down"}
    assert wrong_way_caption("the red circle bounces", draws) is None and wrong_way_caption("a plaid circle moves up", draws) is None
    held_out = f"a red circle {MOTION_WORDS['right'].heldout[0]}"  # the negative would teach a held-out phrase
    assert parse(held_out).motion == "right" and wrong_way_caption(held_out, draws) is None


def test_wrong_way_captions_send_one_motion_each_wrong_way_in_turn() -> None:
    """One caption per wrong way of each one-way motion, the other object's motion and every
    other word left as they are; nothing for a motion with no way, a held-out phrase or a
    caption the world cannot read."""
    from kinema.world.language import caption, paraphrase
    from kinema.world.sample import random_event

    rng = np.random.default_rng(48)
    for kind in ("one object", "two objects") * 30:
        spec, _ = random_event(rng, kind)
        for text in (caption(spec), paraphrase(spec, rng, split="train")):
            motions = [o.motion for o in spec.objects]
            negatives = wrong_way_captions(text)
            assert len(negatives) == sum(len(WRONG_WAYS.get(m, ())) for m in motions), (text, negatives)
            sent = []
            for negative in negatives:
                meant = parse(negative)
                changed = [k for k, (o, m) in enumerate(zip(meant.objects, motions)) if o.motion != m]
                assert len(changed) == 1 and meant.objects[changed[0]].motion in WRONG_WAYS[motions[changed[0]]], (text, negative)
                assert [(o.color, o.shape, o.size) for o in meant.objects] == [(o.color, o.shape, o.size) for o in spec.objects]
                assert meant.background == spec.background
                sent.append((changed[0], meant.objects[changed[0]].motion))
            assert len(set(sent)) == len(sent), "each wrong way once"
    assert wrong_way_captions("a red circle moves to the right") == ["a red circle moves to the left", "a red circle moves up", "a red circle moves down"]
    assert wrong_way_captions("a big green triangle gets bigger") == ["a big green triangle gets smaller"]
    assert wrong_way_captions("the red circle bounces") == [] and wrong_way_captions("a plaid circle moves up") == []
    assert wrong_way_captions(f"a red circle {MOTION_WORDS['right'].heldout[0]}") == []


def test_training_data_gives_two_object_captions_a_swapped_negative() -> None:
    tokenizer = CViViT(CViViTConfig.preset("tiny")).eval()
    encoder = get_text_encoder()
    assert PhenakiData(tokenizer, encoder, batch_size=2, seed=4).batch(0).negatives is None, "off unless asked for"
    batch = PhenakiData(tokenizer, encoder, batch_size=32, seed=5, story_share=0.0, negatives=True).batch(0)
    neg = batch.negatives
    assert neg.text.shape[0] == 32 and 0 < int(neg.rows.sum()) < 32
    for i, caption in enumerate(batch.captions):
        swaps = [s for s in (swapped_caption(caption, a) for a in ("shape", "motion")) if s is not None]
        assert bool(neg.rows[i]) == bool(swaps)
        candidates = encoder.encode(swaps or [caption])
        assert any(torch.allclose(t, neg.text[i]) for t in candidates.tokens), f"row {i}: the caption swapped (or itself when unmarked)"


def test_the_binding_hinge_is_the_margin_when_the_model_cannot_tell_and_teaches_it_to() -> None:
    """Same words bound the other way score the same for a model that reads only what is
    named: the hinge is then exactly the margin. Trained on it, a tiny MaskGIT tells them apart."""
    torch.manual_seed(0)
    tokenizer = CViViT(CViViTConfig.preset("tiny")).eval()
    batch = PhenakiData(tokenizer, get_text_encoder(), batch_size=16, seed=7, story_share=0.0, negatives=True).batch(0)
    model = MaskGit(MaskGitConfig(fsq_levels=tokenizer.config.fsq_levels, grid=tokenizer.config.grid_size, dim=32, depth=1, heads=2, dim_head=16, cond_drop=0.0))
    rows, objects = batch.negatives.rows, batch.foreground
    same = (batch.text, batch.text_mask, rows, objects)
    out = model.loss(batch.codes, batch.text, batch.text_mask, batch.context, batch.has_context, negatives=same, binding_weight=1.0)
    assert abs(float(out["binding_gap"])) < 1e-5 and abs(float(out["binding"]) - BINDING_MARGIN) < 1e-5
    negatives = (batch.negatives.text, batch.negatives.mask, rows, objects)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gaps = []
    for _ in range(40):
        out = model.loss(batch.codes, batch.text, batch.text_mask, batch.context, batch.has_context, negatives=negatives, binding_weight=1.0)
        if out["binding"].isnan():  # this draw masked no object token of a two-object row
            continue
        optim.zero_grad()
        out["binding"].backward()
        optim.step()
        gaps.append(float(out["binding_gap"]))
    assert len(gaps) > 30 and gaps[-1] > gaps[0] + 0.5, gaps


def two_object_captions(seed: int, count: int = 150):
    """(scene, caption) for `count` captions of random two-object scenes, each scene worded
    three ways: the canonical caption, a train paraphrase and a held-out one."""
    from kinema.world.language import caption, paraphrase
    from kinema.world.sample import random_event

    rng = np.random.default_rng(seed)
    for _ in range(count // 3):
        spec, _ = random_event(rng, "two objects")
        for text in (caption(spec), paraphrase(spec, rng, split="train"), paraphrase(spec, rng, split="heldout")):
            yield spec, text


def test_a_moving_caption_says_each_still_object_moves_in_the_captions_own_register() -> None:
    """What a rigid object that stays still is drawn from (its steady drawing then laid still):
    every object that stays still moves to the left instead, worded as plainly as the caption
    was, and nothing else changes; a held-out phrase is not resaid (it stays unseen), and a
    caption where nothing stays still has none."""
    from kinema.world.language import caption, paraphrase
    from kinema.world.sample import random_event

    rng = np.random.default_rng(13)
    resaid = 0
    for kind in ("one object", "two objects") * 60:
        spec, _ = random_event(rng, kind)
        for text in (caption(spec), paraphrase(spec, rng, split="train")):
            moving = moving_caption(text)
            if all(o.motion != "still" for o in spec.objects):
                assert moving is None, text
                continue
            assert moving is not None, text
            resaid += 1
            meant = parse(moving)
            assert [o.motion for o in meant.objects] == ["left" if o.motion == "still" else o.motion for o in spec.objects], (text, moving)
            assert [(o.color, o.shape, o.size) for o in meant.objects] == [(o.color, o.shape, o.size) for o in spec.objects]
            assert meant.background == spec.background and not uses_heldout(moving)
    assert resaid > 20
    assert moving_caption("a red square stays still in the desert") == "a red square moves to the left in the desert"
    assert moving_caption("a green square stays still and a white circle grows on a black background") == "a green square moves to the left and a white circle grows on a black background"
    held_out = f"a red square {MOTION_WORDS['still'].heldout[0]} in the desert"
    assert parse(held_out).objects[0].motion == "still" and moving_caption(held_out) is None
    assert moving_caption("a red square bounces in the desert") is None and moving_caption("a plaid square stays still") is None


def test_the_first_objects_clause_is_cut_from_the_callers_own_words() -> None:
    """What a composed draw (PhenakiPipeline) draws first: the caption without its second
    object, worded as the caption words it, held-out words included."""
    import dataclasses

    assert first_object_caption("a white circle shrinks and a red square bounces up and down in the desert") == "a white circle shrinks in the desert"
    assert first_object_caption("In the forest, a red ball rises whereas a blue box stays still.") == "In the forest, a red ball rises."
    assert first_object_caption("we see a red circle rising and a blue square bouncing at night") == "we see a red circle rising at night"
    for one in ("a red circle moves up at night", "the red circle moves up", "the camera zooms in on a red circle and a blue square at night", "a plaid circle and a red square"):
        assert first_object_caption(one) is None, one
    for spec, text in two_object_captions(seed=5):
        assert parse(first_object_caption(text)) == dataclasses.replace(spec, objects=spec.objects[:1]), text


def test_the_second_objects_clause_is_cut_from_the_callers_own_words() -> None:
    """What a composed draw draws second, to lay on the first: the caption without its first
    object, worded as the caption words it, held-out words included."""
    import dataclasses

    assert second_object_caption("a white circle shrinks and a red square bounces up and down in the desert") == "a red square bounces up and down in the desert"
    assert second_object_caption("In the forest, a red ball rises whereas a blue box stays still.") == "In the forest, a blue box stays still."
    assert second_object_caption("there is a red circle that rises and an orange square that grows at night") == "there is an orange square that grows at night"
    assert second_object_caption("beneath a starry sky, a brick coloured ruby enlarges whereas a magenta arrowhead heads right") == "beneath a starry sky, a magenta arrowhead heads right"
    assert second_object_caption("a red circle moves up at night") is None
    for spec, text in two_object_captions(seed=7):
        assert parse(second_object_caption(text)) == dataclasses.replace(spec, objects=spec.objects[1:]), text


def test_the_infill_caption_names_only_the_shape_still_to_draw() -> None:
    """Around a kept first object, the rest is infilled under the caption with that object's
    shape word made the second's, in the caller's words (held-out ones too), with its article
    fitted; colours, motions and the scene stay; two objects of one shape keep the caption."""
    import dataclasses

    assert infill_caption("a white circle shrinks and a red square bounces in the desert") == "a white square shrinks and a red square bounces in the desert"
    assert infill_caption("beneath a starry sky, a brick coloured ruby enlarges whereas a magenta arrowhead heads right") == "beneath a starry sky, an arrowhead coloured ruby enlarges whereas a magenta arrowhead heads right"
    assert infill_caption("a red square rises and a blue square stays still at night") == "a red square rises and a blue square stays still at night"
    assert infill_caption("a red circle moves up at night") is None
    for spec, text in two_object_captions(seed=6):
        first, second = spec.objects
        assert parse(infill_caption(text)) == dataclasses.replace(spec, objects=(dataclasses.replace(first, shape=second.shape), second)), text


def test_a_medium_caption_draws_each_small_rigid_object_medium_sized_in_the_captions_own_register() -> None:
    """What a small rigid object is drawn from before its steady drawing is scaled back down:
    its size said as medium, worded as plainly as the caption was, and nothing else changed; an
    object that grows or shrinks keeps its size (its size is what it does), and a held-out size
    word is not resaid (it stays unseen)."""
    from kinema.world.language import caption, paraphrase
    from kinema.world.sample import random_event

    rigid = ("right", "left", "up", "down", "bounces", "still")
    rng = np.random.default_rng(5)
    resaid = 0
    for _ in range(200):
        spec, _ = random_event(rng, "one object")
        for text in (caption(spec), paraphrase(spec, rng, split="train")):
            medium = medium_caption(text, rigid)
            (obj,) = spec.objects
            if obj.size != "small" or obj.motion not in rigid:
                assert medium is None, text
                continue
            resaid += 1
            meant = parse(medium)
            assert [(o.color, o.shape, o.motion, o.size) for o in meant.objects] == [(obj.color, obj.shape, obj.motion, "medium")], (text, medium)
            assert meant.background == spec.background and not uses_heldout(medium)
    assert resaid > 10
    assert medium_caption("a small red square moves up in the desert", rigid) == "a medium red square moves up in the desert"
    assert medium_caption("a tiny red square bounces at night", rigid) == "a mid-sized red square bounces at night"
    assert medium_caption("a small red square moves up and a large blue circle bounces in the desert", rigid) == "a medium red square moves up and a large blue circle bounces in the desert"
    assert medium_caption("a small red square grows in the desert", rigid) is None
    held_out = f"a {SIZE_WORDS['small'].heldout[0]} red square moves up in the desert"
    assert parse(held_out).objects[0].size == "small" and medium_caption(held_out, rigid) is None
