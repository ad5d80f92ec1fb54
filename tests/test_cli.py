"""The command line as a user meets it: real files, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kinema.cli import app
from kinema.io import read_video

runner = CliRunner()
CAPTION = "a small red circle moves to the right on a black background"


def kinema(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("ext", ["npy", "mp4", "webm", "gif"])
def test_world_render_then_judge(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"clip.{ext}"
    result = kinema("world", "render", CAPTION, "-o", str(path), "--seed", "3")
    assert result.exit_code == 0, result.output
    video = read_video(path)
    assert video.frames.shape == (16, 64, 64, 3)
    obeys = kinema("world", "judge", str(path), "--caption", CAPTION)
    assert obeys.exit_code == 0, obeys.output
    assert "OBEYS" in obeys.output


def test_judge_exits_1_with_reasons_when_the_video_disobeys(tmp_path: Path) -> None:
    path = tmp_path / "clip.npy"
    kinema("world", "render", CAPTION, "-o", str(path))
    result = kinema("world", "judge", str(path), "--caption", CAPTION.replace("right", "left"))
    assert result.exit_code == 1
    assert "should move left" in result.output


def test_strip_and_size(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    assert kinema("world", "render", "a blue triangle bounces in the desert", "-o", str(path), "--size", "96").exit_code == 0
    assert path.stat().st_size > 0
    assert read_video(path).frames.shape == (16, 96, 96, 3)


def test_story_file_render_and_judge(tmp_path: Path) -> None:
    story = tmp_path / "story.txt"
    story.write_text("# a story\na small red circle moves up at night\n\nA small blue box appears. The camera zooms in.\nthe red ball drifts right\n")
    film = tmp_path / "film.npy"
    result = kinema("world", "render", "--story", str(story), "-o", str(film))
    assert result.exit_code == 0, result.output
    assert read_video(film).frames.shape[0] == 64
    verdict = kinema("world", "judge", str(film), "--story", str(story))
    assert verdict.exit_code == 0, verdict.output
    assert "4/4 events, 3/3 boundaries" in verdict.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["world", "render", "a dragon flies at night", "-o", "x.mp4"], "unknown word 'dragon'"),
        (["world", "render", CAPTION, "-o", "x.avi"], ".avi"),
        (["world", "render", "", "-o", "x.mp4"], "empty"),
        (["world", "judge", "missing.npy", "--caption", CAPTION], "missing.npy"),
        (["world", "judge", "missing.npy"], "exactly one"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path: Path, monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = kinema(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.avi").exists()


def test_corrupt_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    result = kinema("world", "judge", str(bad), "--caption", CAPTION)
    assert result.exit_code == 2 and "bad.mp4" in result.output


def test_empty_story_file(tmp_path: Path) -> None:
    story = tmp_path / "empty.txt"
    story.write_text("# nothing here\n\n")
    result = kinema("world", "render", "--story", str(story), "-o", str(tmp_path / "f.mp4"))
    assert result.exit_code == 2 and "empty" in result.output


def test_installed_command_runs_as_a_process(tmp_path: Path) -> None:
    """The console script and exit codes, as a shell sees them."""
    out = tmp_path / "clip.npy"
    ok = subprocess.run([sys.executable, "-m", "kinema", "world", "render", CAPTION, "-o", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "kinema", "world", "judge", str(out), "-c", "a red dragon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "dragon" in bad.stderr
    info = subprocess.run([sys.executable, "-m", "kinema", "info"], capture_output=True, text=True)
    assert info.returncode == 0 and "torch" in info.stdout and "bf16" in info.stdout
    assert np.load(out).shape == (16, 64, 64, 3)
