"""The video-text matcher that reranks a generator's candidates: its data (a scene's caption
against the same scene with one thing changed), its scores, its training command, and the
Imagen Video cascade keeping the candidate it prefers."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kinema import checkpoint as ckpt
from kinema.models.imagen_video.data import STAGES
from kinema.models.imagen_video.pipeline import ImagenVideoPipeline, ImagenVideoSampler
from kinema.models.matcher import VideoTextMatcher, VideoTextMatcherConfig
from kinema.models.matcher.data import MatcherData, changed, runs_one_way
from kinema.models.matcher.model import matching_loss
from kinema.text import get_text_encoder
from kinema.train.cli import train_app
from kinema.world.language import caption, parse
from kinema.world.judge import judge
from kinema.world.render import render_event
from kinema.world.sample import random_event, random_scene
from test_imagen_video import randomized

TINY = {"width": 8, "dim": 16}
PROMPT = "a red circle moves up at night"


def differences(a, b) -> list[str]:
    """The fields (object k's, or the scene's) in which two scenes differ."""
    found = [f for f in ("background", "camera") if getattr(a, f) != getattr(b, f)]
    for k, (x, y) in enumerate(zip(a.objects, b.objects)):
        found += [f"{k}.{f.name}" for f in dataclasses.fields(x) if getattr(x, f.name) != getattr(y, f.name)]
    return found


def test_a_changed_scene_differs_in_one_thing_and_reads_back() -> None:
    rng = np.random.default_rng(0)
    ways = 0
    for _ in range(300):
        spec = random_scene(rng)
        other = changed(spec, rng)
        diff = differences(spec, other)
        assert len(diff) == 1, (spec, other)
        assert parse(caption(other)) == other, "a changed scene is still one the world can say"
        assert len({o.color for o in other.objects}) == len(other.objects), "no two objects of one colour"
        ways += diff[0].endswith("motion") and {spec.objects[0].motion, other.objects[0].motion} <= {"left", "right", "up", "down"}
    assert ways > 20, "a one-way motion is often sent another way: the mistake to catch"


def test_batches_are_seeded_and_hold_each_clips_negatives() -> None:
    data = MatcherData(get_text_encoder(), batch_size=3, negatives=2, seed=5)
    a, b = data.batch(7), data.batch(7)
    assert a.video.shape == (3, 3, 8, 32, 32) and a.text.pooled.shape[0] == 3 * (1 + 2)
    assert torch.equal(a.video, b.video) and torch.equal(a.text.pooled, b.text.pooled)
    assert not torch.equal(a.video, data.batch(8).video)


def test_a_clip_played_backwards_shows_another_scene_where_it_runs_one_way() -> None:
    """The mark that makes a clip's reverse a negative: the world's own clip played backwards
    fails its caption exactly where `runs_one_way` says (a move, a growth, a zoom), and still
    passes where it does not (a bounce, an object that stays still)."""
    rng = np.random.default_rng(3)
    kinds = {True: 0, False: 0}
    for i in range(60):
        spec, event = random_event(rng, ("one object", "one object", "two objects", "camera")[i % 4])
        clip = render_event(event)
        if not judge(clip, spec).passed:
            continue
        kinds[runs_one_way(spec)] += 1
        assert judge(clip[::-1].copy(), spec).passed != runs_one_way(spec), caption(spec)
    assert min(kinds.values()) >= 5


def test_a_batch_marks_the_clips_whose_reverse_is_a_negative() -> None:
    plain = MatcherData(get_text_encoder(), batch_size=12, negatives=1, seed=2)
    a, b = plain.batch(0), dataclasses.replace(plain, backwards=True).batch(0)
    assert torch.equal(a.video, b.video) and torch.equal(a.text.pooled, b.text.pooled), "the mark changes no clip"
    assert not a.backwards.any() and 0 < int(b.backwards.sum()) < 12


def test_scores_put_the_own_caption_first_then_the_changed_then_the_others() -> None:
    torch.manual_seed(0)
    model = VideoTextMatcher(VideoTextMatcherConfig(**TINY)).eval()
    batch = MatcherData(get_text_encoder(), batch_size=3, negatives=2).batch(0)
    scores = model(batch.video, batch.text, batch.negatives)
    assert scores.shape == (3, 1 + 2 + 2)
    v, t = model.embed_video(batch.video), model.embed_text(batch.text)
    for i in range(3):
        own = [t[i]] + [t[3 + 2 * i + n] for n in range(2)] + [t[j] for j in range(3) if j != i]
        assert torch.allclose(scores[i], model.score(v[i : i + 1], torch.stack(own)[None])[0], atol=1e-5)
    assert set(matching_loss(model, batch)) == {"loss", "beats_changed"}
    marked = dataclasses.replace(batch, backwards=torch.tensor([True, False, True]))
    out = matching_loss(model, marked)
    played = model.score(model.embed_video(batch.video[[0, 2]].flip(2)), t[[0, 2]].unsqueeze(1))[:, 0]
    asked = torch.nn.functional.softplus(played - scores[[0, 2], 0]).mean()
    assert torch.allclose(out["loss"], matching_loss(model, batch)["loss"] + asked, atol=1e-5), "the clip is asked over its reverse"
    assert out["beats_backwards"] == (scores[[0, 2], 0] > played).float().mean()


def test_asked_in_a_mirror_the_score_is_the_same_for_the_mirrored_world() -> None:
    """With the mirrored caption, a clip's score is the mean of the two ways of asking, so a
    clip under its caption and the mirrored clip under the mirrored caption score alike,
    whatever side a (here untrained) matcher leans to."""
    torch.manual_seed(1)
    model = VideoTextMatcher(VideoTextMatcherConfig(**TINY)).eval()
    enc = get_text_encoder()
    right, left = enc.encode(["a red circle moves to the right at night"]), enc.encode(["a red circle moves to the left at night"])
    clips = torch.rand(3, 3, 8, 32, 32) * 2 - 1
    asked = model.rank(clips, right, mirrored=left)
    assert torch.allclose(asked, model.rank(clips.flip(-1), left, mirrored=right), atol=1e-5)
    assert not torch.allclose(model.rank(clips, right), model.rank(clips.flip(-1), left), atol=1e-3), "asked one way, it leans"


def test_training_lowers_the_loss_on_unseen_batches() -> None:
    """A few dozen steps on a tiny matcher already tell captions apart better than chance."""
    torch.manual_seed(0)
    model = VideoTextMatcher(VideoTextMatcherConfig(**TINY))
    data = MatcherData(get_text_encoder(), batch_size=8, negatives=2, seed=1)
    unseen = [dataclasses.replace(data, rank=9).batch(i) for i in range(3)]

    def loss() -> float:
        with torch.no_grad():
            return float(np.mean([matching_loss(model, b)["loss"].item() for b in unseen]))

    before = loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for i in range(60):
        out = matching_loss(model, data.batch(i))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert loss() < before - 0.2


@pytest.fixture(scope="module")
def matched_folder(tmp_path_factory) -> Path:
    """The tiny random cascade of test_imagen_video with a matcher trained into it by the command."""
    root = tmp_path_factory.mktemp("matcher")
    stages = {s: randomized(s, i) for i, s in enumerate(STAGES)}
    sampler = ImagenVideoSampler(steps={"base": 3, "tsr": 2, "ssr": 2})
    model = ImagenVideoPipeline(stages, get_text_encoder(), sampler).save_pretrained(root / "model")
    before = sorted(p.name for p in model.iterdir())
    result = CliRunner().invoke(train_app, [
        "matcher", "-o", str(root / "run"), "--max-steps", "3", "--batch-size", "4", "--negatives", "2", "--warmup-steps", "1",
        "--config-json", json.dumps(TINY), "--save-every", "0", "--no-progress", "--into", str(model),
    ])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in model.iterdir()) == sorted([*before, "matcher"])
    return model


def test_the_command_adds_a_matcher_that_reranks_the_candidates(matched_folder: Path, tmp_path: Path) -> None:
    index = ckpt.read_json(matched_folder / ckpt.MODEL_INDEX)
    assert index["components"]["matcher"] == "VideoTextMatcher" and "base" in index["components"]
    pipe = ImagenVideoPipeline.from_pretrained(matched_folder)
    assert isinstance(pipe.matcher, VideoTextMatcher)
    matched = pipe(PROMPT, seed=3, candidates=4, rerank="matcher").frames
    assert np.array_equal(matched, pipe(PROMPT, seed=3, candidates=4, rerank="matcher").frames)
    assert np.array_equal(pipe(PROMPT, seed=3, rerank="matcher").frames, pipe(PROMPT, seed=3).frames), "one candidate: nothing to rank"
    pipe.sampler.candidates, pipe.sampler.rerank = 4, "matcher"
    again = ImagenVideoPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "again"))
    assert isinstance(again.matcher, VideoTextMatcher) and np.array_equal(again(PROMPT, seed=3).frames, matched)


def test_the_matcher_not_the_likelihood_decides(matched_folder: Path) -> None:
    """The two rerankers disagree on some seed's candidates: the matcher's pick is what is drawn."""
    pipe = ImagenVideoPipeline.from_pretrained(matched_folder)
    assert any(not np.array_equal(pipe(PROMPT, seed=s, candidates=4, rerank="matcher").frames, pipe(PROMPT, seed=s, candidates=4).frames) for s in range(6))


def test_likelihood_and_matcher_together(matched_folder: Path) -> None:
    """rerank='likelihood+matcher' keeps a seeded candidate, not always the matcher's pick nor
    always the likelihood's: both count."""
    pipe = ImagenVideoPipeline.from_pretrained(matched_folder)
    both = [pipe(PROMPT, seed=s, candidates=4, rerank="likelihood+matcher").frames for s in range(6)]
    assert np.array_equal(both[0], pipe(PROMPT, seed=0, candidates=4, rerank="likelihood+matcher").frames)
    alone = {r: [pipe(PROMPT, seed=s, candidates=4, rerank=r).frames for s in range(6)] for r in ("matcher", "likelihood")}
    for r, frames in alone.items():
        assert any(not np.array_equal(x, y) for x, y in zip(both, frames)), f"the same picks as {r} alone"


def test_a_folder_without_a_matcher_says_so(matched_folder: Path, tmp_path: Path) -> None:
    pipe = ImagenVideoPipeline.from_pretrained(matched_folder)
    pipe.matcher = None
    for rerank in ("matcher", "likelihood+matcher"):
        with pytest.raises(ValueError, match=re.escape(f"rerank='{rerank}' needs a model folder with a matcher")):
            pipe(PROMPT, candidates=4, rerank=rerank)
    with pytest.raises(ValueError, match="unknown rerank"):
        pipe(PROMPT, candidates=4, rerank="clip")


def test_candidates_played_backwards_and_asked_in_a_mirror(matched_folder: Path) -> None:
    """`played_backwards` makes each candidate's reverse a candidate too, and for some seed
    the kept clip is one; `mirror_matcher` asks the matcher in a mirror as well, and for some
    seed keeps another candidate. Both stay seeded."""
    pipe = ImagenVideoPipeline.from_pretrained(matched_folder)
    kw = dict(candidates=4, rerank="matcher")
    caption_ = "a red circle moves to the right at night"
    plain = [pipe(caption_, seed=s, **kw).frames for s in range(8)]
    back = [pipe(caption_, seed=s, played_backwards=True, **kw).frames for s in range(8)]
    mirror = [pipe(caption_, seed=s, mirror_matcher=True, **kw).frames for s in range(8)]
    assert np.array_equal(back[1], pipe(caption_, seed=1, played_backwards=True, **kw).frames)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, back))
    assert any(not np.array_equal(a, b) for a, b in zip(plain, mirror))


def test_a_matcher_fine_tunes_from_a_folder_asking_clips_over_their_reverses(matched_folder: Path, tmp_path: Path) -> None:
    """`--init-from` starts from a folder's matcher (its architecture, not a fresh default
    one); `--backwards` adds the clip-over-its-reverse term to what the run reports; a folder
    with no matcher is one clear line."""
    args = ["--max-steps", "2", "--batch-size", "4", "--negatives", "2", "--warmup-steps", "1", "--save-every", "0", "--no-progress", "--seed", "1"]
    result = CliRunner().invoke(train_app, ["matcher", "-o", str(tmp_path / "tuned"), "--init-from", str(matched_folder), "--backwards", *args])
    assert result.exit_code == 0, result.output
    tuned = ckpt.load_component(tmp_path / "tuned" / "final", "matcher")
    assert tuned.config.width == TINY["width"] and tuned.config.dim == TINY["dim"]
    logged = [json.loads(line) for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert any("beats_backwards" in row for row in logged)
    bad = CliRunner().invoke(train_app, ["matcher", "-o", str(tmp_path / "bad"), "--init-from", str(tmp_path / "tuned"), *args])
    assert bad.exit_code != 0 and "--init-from" in bad.output and "Traceback" not in bad.output


def test_a_fine_tuned_matcher_takes_config_changes_its_weights_allow(matched_folder: Path, tmp_path: Path) -> None:
    """`--init-from` with `--config-json`: a change that keeps every weight's shape (fewer
    GroupNorm groups) is trained from the folder's weights; one that cannot (another width)
    is one clear line, not silently the folder's architecture."""
    args = ["--max-steps", "1", "--batch-size", "4", "--negatives", "2", "--warmup-steps", "1", "--save-every", "0", "--no-progress"]
    ok = CliRunner().invoke(train_app, ["matcher", "-o", str(tmp_path / "g4"), "--init-from", str(matched_folder), "--config-json", '{"groups": 4}', *args])
    assert ok.exit_code == 0, ok.output
    assert ckpt.load_component(tmp_path / "g4" / "final", "matcher").config.groups == 4
    wide = CliRunner().invoke(train_app, ["matcher", "-o", str(tmp_path / "w"), "--init-from", str(matched_folder), "--config-json", '{"width": 16}', *args])
    assert wide.exit_code != 0 and "--init-from" in wide.output and "Traceback" not in wide.output
    assert not (tmp_path / "w" / "final").exists()
