"""`kinema bench`: the harness measures what it says (timings themselves are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from kinema.cli import app
from kinema.eval.bench import bf16_matmul_peak, time_training_step


def test_bench_world_reports_every_measure(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "world", "--runs", "2", "--story-sentences", "20", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    for key in ("load_seconds", "cold_start_seconds", "warm_clip_seconds", "story_seconds", "story_peak_rss_mb", "bf16_peak_tflops"):
        assert report[key] > 0, key
    assert report["story_sentences"] == 20
    # the world streams its story: 20 sentences need no more memory than 10 (within noise)
    assert report["story_peak_rss_mb"] < 1.3 * report["short_story_peak_rss_mb"]
    assert "warm 16-frame clip" in result.output


def test_training_step_counts_flops() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256))
    x = torch.randn(64, 256)
    step = time_training_step("mlp", model, lambda: model(x).square().mean(), peak=bf16_matmul_peak(n=256, seconds=0.1), repeats=1)
    # forward: two 64x256x256 matmuls; backward: weight grads of both and the input grad
    # of the second (the batch needs none): five matmuls of 2*64*256*256 flop
    expected = 5 * 2 * 64 * 256 * 256
    assert abs(step.tflop * 1e12 - expected) / expected < 0.05
    assert step.seconds > 0 and step.tflops > 0
