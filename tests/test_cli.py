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


def one_line_error(result, message: str) -> None:
    """Exit 2 with the message on one `error:` line and no traceback."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output


def test_generate_never_replaces_a_users_folder_or_file(tmp_path: Path) -> None:
    videos = tmp_path / "Videos"
    videos.mkdir()
    (videos / "holiday.mp4").write_bytes(b"precious")
    one_line_error(kinema("generate", CAPTION, "--model", "world", "-o", str(videos)), "holds other things than PNG frames (holiday.mp4)")
    assert (videos / "holiday.mp4").read_bytes() == b"precious"
    notes = tmp_path / "notes"
    notes.write_text("mine")
    one_line_error(kinema("generate", CAPTION, "--model", "world", "-o", str(notes)), "notes is a file, not a folder")
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Videos", "notes"]  # nothing hidden as .notes.old
    frames = tmp_path / "frames"  # a previous PNG-folder video is replaced
    for seed in ("0", "1"):
        assert kinema("generate", CAPTION, "--model", "world", "-o", str(frames), "--seed", seed).exit_code == 0
    assert read_video(frames).frames.shape == (16, 64, 64, 3)


def test_an_output_under_a_file_is_one_line_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "clip.npy"
    one_line_error(kinema("world", "render", CAPTION, "-o", str(target)), f"{target}: Not a directory")
    one_line_error(kinema("generate", CAPTION, "--model", "world", "-o", str(target)), f"{target}: Not a directory")


@pytest.mark.parametrize("config, message", [
    ("[]", "holds a JSON list, expected an object"),
    ('{"_class_name": "MaskGit"}', "says its class is 'MaskGit' but"),
])
def test_a_damaged_model_folder_is_one_line(tmp_path: Path, config: str, message: str) -> None:
    folder = tmp_path / "model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "PhenakiPipeline", "components": {"tokenizer": "CViViT", "transformer": "MaskGit"}}')
    (folder / "tokenizer" / "config.json").write_text(config)
    one_line_error(kinema("generate", CAPTION, "--model", str(folder), "-o", str(tmp_path / "x.npy")), message)


def test_story_messages_name_its_own_inputs(tmp_path: Path) -> None:
    one_line_error(kinema("story", "--model", "world"), "give exactly one of a story FILE or --text PARAGRAPH")
    one_line_error(kinema("world", "render"), "give exactly one of a caption or --story FILE")
    latin1 = tmp_path / "story.txt"
    latin1.write_bytes("a red circle moves up at night\nthe camera zooms in caf\xe9\n".encode("latin-1"))
    one_line_error(kinema("story", str(latin1), "--model", "world", "-o", str(tmp_path / "f.npy")), f"{latin1} is not UTF-8 text")
    one_line_error(kinema("world", "render", "--story", str(latin1), "-o", str(tmp_path / "f.npy")), f"{latin1} is not UTF-8 text")


SEEDS = [("--seed", "-1"), ("--seed", str(2**63))]
SAMPLING = [*SEEDS, ("--steps", "0"), ("--guidance", "-0.5")]


@pytest.mark.parametrize("command, option, value", [
    *[(["generate", CAPTION, "--model", "world"], *bad) for bad in SAMPLING],
    *[(["story", "--text", CAPTION, "--model", "world"], *bad) for bad in SAMPLING],
    *[(["world", "render", CAPTION], *bad) for bad in SEEDS],  # the world has no sampler
])
def test_sampling_options_have_ranges(tmp_path: Path, command: list[str], option: str, value: str) -> None:
    result = kinema(*command, "-o", str(tmp_path / "x.npy"), option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
    assert not (tmp_path / "x.npy").exists()


def test_generate_uses_the_pipelines_own_checks(tmp_path: Path) -> None:
    """The world renders a caption as one event: --frames 32 says so, not a story's error."""
    one_line_error(kinema("generate", CAPTION, "--model", "world", "--frames", "32", "-o", str(tmp_path / "x.npy")), "one event of 16 frames")
    one_line_error(kinema("generate", " ", "--model", "world", "-o", str(tmp_path / "x.npy")), "the prompt is empty")
    assert kinema("generate", CAPTION, "--model", "world", "-o", str(tmp_path / "x.npy"), "--seed", str(2**63 - 1)).exit_code == 0


def test_importing_the_cli_does_not_import_torch() -> None:
    """`kinema --help` starts fast: torch loads only inside the commands that need it."""
    code = "import sys, kinema.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
