"""bf16 where the hardware has it: what autocasts, what a user can force, and clear errors."""

from __future__ import annotations

import pytest
import torch

import kinema
from kinema import precision
from kinema.data.shapes import ShapesVideoDataset
from kinema.tokenizer import CViViT, CViViTConfig
from kinema.train import TrainConfig, Trainer
from kinema.train.cli import tokenizer_loss


def matmul_dtype(context) -> torch.dtype:
    with context:
        return (torch.ones(4, 4) @ torch.ones(4, 4)).dtype


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_hardware(monkeypatch, native):
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": native)
    expected = "bf16" if native else "fp32"
    assert precision.resolve(None, "cpu") == precision.resolve("auto", "cpu") == expected
    assert matmul_dtype(precision.autocast("cpu")) == (torch.bfloat16 if native else torch.float32)


def test_the_environment_overrides_auto_and_an_explicit_choice_overrides_both(monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": False)
    monkeypatch.setenv(precision.ENV, "bf16")
    assert precision.resolve(None, "cpu") == precision.resolve("auto", "cpu") == "bf16"
    assert precision.resolve("fp32", "cpu") == "fp32"
    assert matmul_dtype(precision.autocast("cpu")) == torch.bfloat16
    monkeypatch.setenv(precision.ENV, "FP32")
    assert matmul_dtype(precision.autocast("cpu")) == torch.float32
    assert matmul_dtype(precision.autocast("cpu", "bf16")) == torch.bfloat16


def test_unknown_precisions_name_their_source(monkeypatch):
    monkeypatch.setenv(precision.ENV, "fp16")
    with pytest.raises(ValueError, match="KINEMA_PRECISION must be one of auto, bf16, fp32, got 'fp16'"):
        precision.resolve(None, "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("half", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(output="x", precision="fp16")


@pytest.mark.parametrize("forced", ["bf16", "fp32"])
def test_the_trainer_and_the_pipeline_run_in_the_chosen_precision(tmp_path, monkeypatch, forced):
    monkeypatch.setenv(precision.ENV, forced)
    dtype = torch.bfloat16 if forced == "bf16" else torch.float32
    trainer = Trainer(CViViT(CViViTConfig.preset("tiny")), TrainConfig(output=str(tmp_path), max_steps=1, progress=False),
                      ShapesVideoDataset(batch_size=1).batch, tokenizer_loss, export_name="tokenizer")
    assert trainer.precision == forced and matmul_dtype(trainer._autocast()) == dtype
    pipe = kinema.load_pipeline("phenaki-shapes", device="cpu")
    assert matmul_dtype(pipe._autocast()) == dtype
    frames = pipe("a red circle moves up at night", seed=0).frames
    assert frames.shape == (16, 64, 64, 3) and frames.dtype.name == "uint8"
