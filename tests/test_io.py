"""kinema.io: every format round-trips real files; errors are clear; writes are atomic."""

from __future__ import annotations

import json
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from kinema.io import Video, VideoWriter, read_video, write_video
from kinema.io.video import FRAME_NAME


def shapes_clip(num_frames: int = 16, size: int = 64, seed: int = 0) -> np.ndarray:
    """Flat-colour rectangles moving over a flat background, like the Shapes world."""
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    frames[:] = rng.integers(0, 256, 3)
    boxes = [(rng.integers(0, size // 2, 2), rng.integers(-2, 3, 2), rng.integers(0, 256, 3)) for _ in range(3)]
    for t in range(num_frames):
        for (y, x), (dy, dx), colour in boxes:
            y0, x0 = (y + dy * t) % (size // 2), (x + dx * t) % (size // 2)
            frames[t, y0 : y0 + size // 4, x0 : x0 + size // 4] = colour
    return frames


@pytest.fixture
def clip() -> Video:
    return Video(shapes_clip(), fps=8.0)


def test_video_validates_and_describes_itself(clip: Video) -> None:
    assert clip.num_frames == 16 and clip.size == (64, 64) and clip.duration == 2.0
    with pytest.raises(ValueError, match="uint8"):
        Video(clip.frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        Video(clip.frames[..., :2])
    with pytest.raises(ValueError, match="at least one frame"):
        Video(clip.frames[:0])
    joined = Video.concat([clip, clip])
    assert joined.num_frames == 32 and np.array_equal(joined.frames[16:], clip.frames)


def test_npy_round_trip_is_exact(tmp_path, clip: Video) -> None:
    path = clip.save(tmp_path / "clip.npy")
    back = read_video(path)
    assert np.array_equal(back.frames, clip.frames)
    assert back.fps == 8.0  # not stored: the default
    assert np.load(path, allow_pickle=False).shape == (16, 64, 64, 3)


def test_png_folder_round_trip_is_exact(tmp_path, clip: Video) -> None:
    write_video(clip, str(tmp_path / "frames") + "/")
    assert sorted(p.name for p in (tmp_path / "frames").iterdir())[:2] == ["frame_00000.png", "frame_00001.png"]
    assert np.array_equal(read_video(tmp_path / "frames").frames, clip.frames)
    # Saving again over the folder replaces it whole.
    Video(clip.frames[:3]).save(tmp_path / "frames")
    assert read_video(tmp_path / "frames").num_frames == 3


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_lossy_codecs_keep_frames_and_colours(tmp_path, clip: Video, suffix: str) -> None:
    back = read_video(clip.save(tmp_path / f"clip{suffix}"))
    assert back.frames.shape == clip.frames.shape
    assert back.fps == pytest.approx(8.0)
    assert np.abs(back.frames.astype(int) - clip.frames).mean() < 6


def test_gif_is_exact_for_flat_colours_and_close_for_gradients(tmp_path, clip: Video) -> None:
    back = read_video(clip.save(tmp_path / "clip.gif"))
    assert back.frames.shape == clip.frames.shape and back.fps == pytest.approx(8.0)
    assert np.array_equal(back.frames, clip.frames)
    # More than 256 colours per frame: quantized, but close.
    ramp = np.linspace(0, 255, 64 * 64 * 3).reshape(1, 64, 64, 3)
    gradient = np.concatenate([np.roll(ramp, t, axis=1) for t in range(4)]).astype(np.uint8)
    back = read_video(Video(gradient).save(tmp_path / "gradient.gif"))
    assert np.abs(back.frames.astype(int) - gradient).mean() < 2


@pytest.mark.parametrize("fps", [8.0, 24000 / 1001, 60.0])
def test_gif_keeps_still_frames_and_the_fps(tmp_path, fps: float) -> None:
    """GIF merges a frame identical to the one before into one longer frame, and its delays
    are whole centiseconds (8 fps is 12.5 cs): the clip must still come back frame for frame."""
    still = np.zeros((4, 16, 16, 3), np.uint8)
    still[2:] = 200
    back = read_video(Video(still, fps=8).save(tmp_path / "still.gif"))
    assert back.num_frames == 4 and back.fps == 8.0 and np.array_equal(back.frames, still)
    moving = shapes_clip(6, size=32)
    frames = moving[[0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5, 5]]  # still segments, a still tail
    back = read_video(Video(frames, fps=fps).save(tmp_path / "clip.gif"))
    assert back.num_frames == len(frames) and back.fps == fps
    assert np.array_equal(back.frames, frames)


def test_a_gif_kinema_did_not_write_plays_at_its_shortest_frame(tmp_path) -> None:
    images = [Image.fromarray(np.full((8, 8, 3), grey, np.uint8)) for grey in (0, 100, 200)]
    images[0].save(tmp_path / "other.gif", save_all=True, append_images=images[1:], duration=[100, 300, 100], comment="made elsewhere")
    back = read_video(tmp_path / "other.gif")
    assert back.fps == pytest.approx(10.0) and back.frames[:, 0, 0, 0].tolist() == [0, 100, 100, 100, 200]


def test_strip_has_the_grid_size_and_reads_back(tmp_path) -> None:
    clip = Video(shapes_clip(num_frames=20))
    path = clip.save(tmp_path / "strip.png")
    # 16 per row, 64 px frames upscaled 2x, 2 px separators: 2 rows.
    assert Image.open(path).size == (16 * 128 + 15 * 2, 2 * 128 + 2)
    assert np.array_equal(read_video(path).frames, clip.frames)
    every_fourth = read_video(clip.strip(tmp_path / "every4.png", every=4, scale=1))
    assert np.array_equal(every_fourth.frames, clip.frames[::4]) and every_fourth.fps == 2.0


def test_png_without_strip_metadata_is_refused(tmp_path) -> None:
    Image.fromarray(shapes_clip(1)[0]).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="not a kinema frame strip"):
        read_video(tmp_path / "plain.png")


@pytest.mark.parametrize(
    "layout, reason",
    [
        ('{"frames": 2}', "no height"),
        ("not json", "not JSON"),
        ('{"frames": 2, "height": 8, "width": 8, "columns": 0, "scale": 1, "separator": 2, "fps": 8}', "columns"),
        ('{"frames": 2, "height": 8, "width": 8, "columns": 2, "scale": 1, "separator": 2, "fps": -1}', "fps"),
        ('{"frames": 9, "height": 8, "width": 8, "columns": 2, "scale": 1, "separator": 2, "fps": 8}', "do not fit"),
    ],
)
def test_broken_strip_metadata_is_a_one_line_value_error(tmp_path, layout: str, reason: str) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("kinema-strip", layout)
    Image.fromarray(np.zeros((8, 18, 3), np.uint8)).save(tmp_path / "strip.png", pnginfo=info)
    with pytest.raises(ValueError, match=f"broken kinema frame strip.*{reason}") as caught:
        read_video(tmp_path / "strip.png")
    assert "\n" not in str(caught.value)


def test_png_folder_reads_its_frame_files_in_number_order(tmp_path) -> None:
    """Past frame 99 999 the writer's names grow a digit, and string order puts them first."""
    folder = tmp_path / "film"
    folder.mkdir()
    numbers = [99_998, 99_999, 100_000, 100_001]  # the last frames of a long film
    for n in numbers:
        Image.fromarray(np.full((4, 4, 3), n % 250, np.uint8)).save(folder / FRAME_NAME.format(n))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "cover.png")  # not a frame
    back = read_video(folder)
    assert back.frames[:, 0, 0, 0].tolist() == [n % 250 for n in numbers]


def test_fps_may_be_any_real_number(tmp_path) -> None:
    frames = shapes_clip(2, size=8)
    for fps in (Fraction(24000, 1001), np.float32(12.5), np.int64(8)):
        assert Video(frames, fps=fps).fps == float(fps) and type(Video(frames, fps=fps).fps) is float
    with VideoWriter(tmp_path / "clip.npy", fps=Fraction(25, 2)) as writer:
        writer.write(frames)
    assert writer.fps == 12.5
    for bad in (True, 0, float("nan"), "8"):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            Video(frames, fps=bad)
        with pytest.raises(ValueError, match="fps must be a positive number"):
            VideoWriter(tmp_path / "bad.npy", fps=bad)


def test_unknown_extension_names_it_and_the_supported_ones(tmp_path, clip: Video) -> None:
    with pytest.raises(ValueError, match=r"'\.avi'.*\.mp4.*\.npy"):
        clip.save(tmp_path / "clip.avi")
    assert not (tmp_path / "clip.avi").exists()


def test_missing_and_corrupt_files_raise_one_line_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no video at"):
        read_video(tmp_path / "absent.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError, match="cannot decode") as info:
        read_video(tmp_path / "bad.mp4")
    assert "\n" not in str(info.value) and info.value.__cause__ is None
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_video(tmp_path / "bad.npy")


def test_odd_size_mp4_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(ValueError, match="even height and width"):
        Video(shapes_clip()[:, :63]).save(tmp_path / "odd.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["film.npy", "film.mp4", "film.gif", "film.png", "film"])
def test_failed_write_leaves_nothing(tmp_path, name: str) -> None:
    with pytest.raises(RuntimeError, match="model crashed"):
        with VideoWriter(tmp_path / name, fps=8) as writer:
            writer.write(shapes_clip(4))
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []  # no target, no temp files


def test_failed_write_keeps_the_previous_file(tmp_path, clip: Video) -> None:
    path = clip.save(tmp_path / "clip.npy")
    with pytest.raises(RuntimeError):
        with VideoWriter(path) as writer:
            writer.write(shapes_clip(2, seed=1))
            raise RuntimeError("interrupted")
    assert np.array_equal(read_video(path).frames, clip.frames)


def test_writer_with_no_frames_saves_nothing(tmp_path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".npy", ".mp4"])
def test_streaming_writer_appends_chunks(tmp_path, suffix: str) -> None:
    chunks = [shapes_clip(8, seed=i) for i in range(5)]
    with VideoWriter(tmp_path / f"film{suffix}", fps=8, size=(64, 64)) as writer:
        for chunk in chunks:
            writer.write(chunk)
        writer.write(chunks[0][0])  # a single (H, W, 3) frame is a chunk of one
    back = read_video(tmp_path / f"film{suffix}")
    assert back.num_frames == 41 == writer.frames_written
    if suffix == ".npy":
        assert np.array_equal(back.frames[:40], np.concatenate(chunks))


def test_streaming_writer_rejects_a_size_change(tmp_path) -> None:
    with pytest.raises(ValueError, match="frame size changed"):
        with VideoWriter(tmp_path / "film.npy") as writer:
            writer.write(shapes_clip(2, size=64))
            writer.write(shapes_clip(2, size=32))
    assert list(tmp_path.iterdir()) == []


def test_streaming_npy_memory_does_not_grow_with_length(tmp_path) -> None:
    """A 960-frame film streamed in 16-frame chunks: peak memory is about one chunk."""
    chunk = shapes_clip(16)
    tracemalloc.start()
    with VideoWriter(tmp_path / "story.npy") as writer:
        for _ in range(60):
            writer.write(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * chunk.nbytes  # the whole film is 60 chunks
    film = np.load(tmp_path / "story.npy", mmap_mode="r", allow_pickle=False)
    assert film.shape == (960, 64, 64, 3) and np.array_equal(film[-16:], chunk)


def test_strip_metadata_records_the_layout(tmp_path, clip: Video) -> None:
    path = clip.strip(tmp_path / "s.png", columns=4, scale=3)
    layout = json.loads(Image.open(path).info["kinema-strip"])
    assert layout["columns"] == 4 and layout["scale"] == 3 and layout["frames"] == 16
    assert Image.open(path).size == (4 * 192 + 3 * 2, 4 * 192 + 3 * 2)


def test_written_files_get_ordinary_permissions(tmp_path) -> None:
    """Atomic writes go through a private temp file; the result must not stay private."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    path = Video(np.zeros((2, 8, 8, 3), np.uint8)).save(tmp_path / "clip.npy")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, "as open() would have made it"


def test_a_png_folder_never_replaces_a_folder_of_other_files(tmp_path, clip: Video) -> None:
    """`-o ~/Videos` must not wipe ~/Videos: only a previous PNG-folder video is replaced."""
    videos = tmp_path / "Videos"
    videos.mkdir()
    (videos / "holiday.mp4").write_bytes(b"precious")
    (videos / FRAME_NAME.format(0)).write_bytes(b"a frame-named file beside it changes nothing")
    with pytest.raises(ValueError, match=r"Videos is a folder that holds other things than PNG frames \(holiday.mp4\)"):
        clip.save(videos)
    assert (videos / "holiday.mp4").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Videos"]  # no temp folder, no .Videos.old


def test_a_png_folder_checks_its_target_again_before_replacing_it(tmp_path, clip: Video) -> None:
    """A long film streams for minutes; a file that appears in the folder meanwhile is kept."""
    folder = clip.save(tmp_path / "frames")
    with pytest.raises(ValueError, match=r"notes.txt"):
        with VideoWriter(folder) as writer:
            writer.write(clip.frames)
            (folder / "notes.txt").write_text("written while the film was made")
    assert (folder / "notes.txt").is_file() and np.array_equal(read_video(folder).frames, clip.frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_a_png_folder_refuses_a_file_in_its_place(tmp_path, clip: Video) -> None:
    notes = tmp_path / "notes"  # no suffix: a folder target
    notes.write_text("mine")
    with pytest.raises(ValueError, match=r"notes is a file, not a folder"):
        clip.save(notes)
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # not hidden as .notes.old


def test_write_errors_name_the_target_not_the_temporary_file(tmp_path) -> None:
    """A full disk (or any OSError on the temporary) names the path the user gave."""
    import errno

    from kinema.fsutil import atomic_dir, atomic_path

    target = tmp_path / "film.mp4"
    with pytest.raises(OSError) as caught:
        with atomic_path(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    with pytest.raises(OSError) as caught:
        with atomic_dir(tmp_path / "frames") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "frame_00003.png"))
    assert caught.value.filename == str(tmp_path / "frames" / "frame_00003.png")
    with pytest.raises(FileNotFoundError) as caught:  # an input the block reads keeps its own name
        with atomic_path(target):
            (tmp_path / "input.txt").read_text()
    assert caught.value.filename == str(tmp_path / "input.txt")
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError) as caught:
        Video(shapes_clip(2)).save(tmp_path / "afile" / "clip.npy")
    assert caught.value.filename == str(tmp_path / "afile" / "clip.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
