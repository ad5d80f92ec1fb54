"""`kinema bench`: the harness measures what it says (timings themselves are not asserted)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kinema.cli import app
from kinema.eval import versus
from kinema.eval.bench import BenchReport, matmul_peak, report_json, time_training_step
from kinema.models.phenaki.maskgit import MaskGit, MaskGitConfig
from kinema.models.phenaki.pipeline import PhenakiPipeline
from kinema.text import get_text_encoder
from kinema.tokenizer.cvivit import CViViT, CViViTConfig


def test_bench_world_reports_every_measure(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "world", "--runs", "2", "--story-sentences", "20", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    for key in ("load_seconds", "cold_start_seconds", "warm_clip_seconds", "story_seconds", "story_peak_rss_mb", "peak_tflops"):
        assert report[key] > 0, key
    assert report["story_sentences"] == 20
    assert report["precision"] in ("bf16", "fp32") and f"{report['precision']} matmul peak" in result.output
    # the world streams its story: 20 sentences need no more memory than 10 (within noise)
    assert report["story_peak_rss_mb"] < 1.3 * report["short_story_peak_rss_mb"]
    assert "warm 16-frame clip" in result.output


def test_training_step_counts_flops() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256))
    x = torch.randn(64, 256)
    step = time_training_step("mlp", model, lambda: model(x).square().mean(), peak=matmul_peak(n=256, seconds=0.1), repeats=1)
    # forward: two 64x256x256 matmuls; backward: weight grads of both and the input grad
    # of the second (the batch needs none): five matmuls of 2*64*256*256 flop
    expected = 5 * 2 * 64 * 256 * 256
    assert abs(step.tflop * 1e12 - expected) / expected < 0.05
    assert step.seconds > 0 and step.tflops > 0


def tiny_phenaki() -> PhenakiPipeline:
    """An untrained tiny Phenaki: timing needs real modules, not trained ones."""
    torch.manual_seed(0)
    tokenizer = CViViT(CViViTConfig.preset("tiny"))
    config = MaskGitConfig(fsq_levels=tokenizer.config.fsq_levels, grid=tokenizer.config.grid_size, dim=32, depth=1, heads=2, dim_head=16)
    return PhenakiPipeline(tokenizer, MaskGit(config), get_text_encoder())


needs_phenaki_pytorch = pytest.mark.skipif(not versus.available(), reason=f"phenaki-pytorch is not installed: {versus.INSTALL}")


@needs_phenaki_pytorch
def test_phenaki_pytorch_is_built_to_the_same_size_offline() -> None:
    pipe = tiny_phenaki()
    t, m = pipe.tokenizer.config, pipe.transformer.config
    theirs = versus.build_phenaki_pytorch(pipe)
    assert theirs.codes == 128  # FSQ 5*5*5 = 125 codes -> LFQ's next power of two
    assert theirs.cvivit.patch_height_width == (t.grid_size, t.grid_size)
    assert theirs.cvivit.num_tokens_per_frames(16) == m.event_tokens
    maskgit = theirs.phenaki.maskgit
    assert maskgit.dim == m.dim and len(maskgit.transformer.layers) == m.depth and maskgit.mask_id == theirs.codes
    # their text encoder is kinema's (no T5 download): one 16-frame clip from a prompt
    video = theirs.phenaki.sample(texts="a red circle moves up at night", num_frames=16)
    assert video.shape == (1, 3, 16, t.image_size, t.image_size)


@needs_phenaki_pytorch
def test_versus_times_both_sides_and_reports_ratios() -> None:
    pipe = tiny_phenaki()
    report = versus.compare(pipe, peak=matmul_peak(n=256, seconds=0.1), runs=1, repeats=1)
    measures = [m.measure for m in report.matchups]
    assert [m.split()[0:2] for m in measures] == [["sample", "one"], ["train", "step:"], ["train", "step:"]]
    assert "C-ViViT" in measures[1] and "MaskGIT" in measures[2]
    for m in report.matchups:
        assert m.kinema_seconds > 0 and m.theirs_seconds > 0
        assert m.speedup == pytest.approx(m.theirs_seconds / m.kinema_seconds)
    for m in report.matchups[1:]:
        assert m.kinema_tflop > 0 and m.theirs_tflop > 0
    assert report.parameters["MaskGIT"][0] == sum(p.numel() for p in pipe.transformer.parameters())
    rows = report.rows()
    ratio_rows = [value for key, value in rows if any(key.endswith(m) for m in measures)]
    assert len(ratio_rows) == 3 and all(("× faster" in v) != ("× slower" in v) for v in ratio_rows)
    notes = " ".join(value for key, value in rows if key.endswith("note"))
    assert "FSQ 5×5×5 = 125 codes" in notes and "LFQ" in notes and "128 codes" in notes

    # the bench report carries them: rows in the table, numbers in the JSON
    numbers = {f: 1.0 for f in BenchReport.__dataclass_fields__ if f not in ("model", "device", "training_steps", "versus")}
    bench = BenchReport(model="tiny", device="cpu", **{**numbers, "threads": 1, "warm_clip_runs": 1, "story_sentences": 10}, versus=report)
    assert rows[0] in bench.rows()
    saved = json.loads(report_json(bench))["versus"]
    assert saved == json.loads(json.dumps(asdict(report)))
    assert saved["matchups"][0]["theirs_seconds"] == report.matchups[0].theirs_seconds


def test_bench_vs_unknown_competitor_is_one_line() -> None:
    result = CliRunner().invoke(app, ["bench", "world", "--vs", "make-a-video-pytorch"])
    assert result.exit_code == 2, result.output
    assert "unknown --vs 'make-a-video-pytorch'" in result.output and "phenaki-pytorch" in result.output
    assert "Traceback" not in result.output


def test_bench_vs_without_the_extra_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "phenaki_pytorch", None)  # as if not installed
    result = CliRunner().invoke(app, ["bench", "world", "--vs", "phenaki-pytorch"])
    assert result.exit_code == 2, result.output
    assert "not installed: pip install beartype && pip install --no-deps phenaki-pytorch==0.5.0" in result.output
    assert "Traceback" not in result.output


@needs_phenaki_pytorch
def test_bench_vs_refuses_a_model_that_is_not_phenaki() -> None:
    result = CliRunner().invoke(app, ["bench", "world", "--vs", "phenaki-pytorch"])
    assert result.exit_code == 2, result.output
    assert "compares Phenaki models" in result.output and "'world'" in result.output
