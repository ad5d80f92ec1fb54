"""C-ViViT and checkpoint folders: tiny real models, seeded."""

from __future__ import annotations

import json

import pytest
import torch

from kinema.checkpoint import CheckpointError, load_component, save_pretrained
from kinema.data.shapes import ShapesVideoDataset
from kinema.tokenizer import CViViT, CViViTConfig


@pytest.fixture(scope="module")
def tiny() -> CViViT:
    torch.manual_seed(0)
    return CViViT(CViViTConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return ShapesVideoDataset(batch_size=2, seed=3).batch(0).video


def test_token_count_matches_config(tiny, clips):
    config = tiny.config
    indices = tiny.encode(clips)
    assert indices.shape == (2, 4, 8, 8)
    assert indices[0].numel() == config.tokens_per_clip(16) == 256
    assert CViViTConfig().tokens_per_clip(16) == 256
    assert CViViTConfig(temporal_patch=3).tokens_per_clip(16) == 384
    assert int(indices.min()) >= 0 and int(indices.max()) < config.codebook_size


def test_encode_decode_shapes(tiny, clips):
    video = tiny.decode_from_indices(tiny.encode(clips))
    assert video.shape == clips.shape
    assert float(video.abs().max()) <= 1.0
    recon, losses = tiny.train()(clips)
    tiny.eval()
    assert recon.shape == (2, 3, tiny.config.train_decode_frames, 64, 64)
    assert set(losses) >= {"loss", "l1", "mse", "grad"} and losses["loss"].ndim == 0


def test_single_frame_codes_alone(tiny, clips):
    """The MaskGIT conditions on the previous event's last frame, coded as an image."""
    first = tiny.encode(clips[:, :, :1])
    assert first.shape == (2, 1, 8, 8)
    assert torch.equal(first, tiny.encode(clips)[:, :1])
    assert tiny.decode_from_indices(first).shape == (2, 3, 1, 64, 64)


def test_causal_in_time(tiny, clips):
    """Changing frames of later groups leaves the token grids of earlier ones unchanged."""
    changed = clips.clone()
    changed[:, :, 11:] = torch.rand_like(changed[:, :, 11:]) * 2 - 1  # groups: [0], [1-5], [6-10], [11-15]
    a, b = tiny.encode(clips), tiny.encode(changed)
    assert torch.equal(a[:, :3], b[:, :3])
    assert not torch.equal(a[:, 3], b[:, 3])
    # decoding is causal too: earlier frames do not depend on later tokens
    va, vb = tiny.decode_from_indices(a), tiny.decode_from_indices(b)
    torch.testing.assert_close(va[:, :, :11], vb[:, :, :11], atol=1e-5, rtol=0)


def test_longer_clips_code(tiny):
    video = torch.rand(1, 3, 21, 64, 64) * 2 - 1
    assert tiny.encode(video).shape == (1, 5, 8, 8)
    with pytest.raises(ValueError, match="1 \\+ k\\*5"):
        tiny.encode(video[:, :, :15])


def test_save_load_round_trip(tiny, clips, tmp_path):
    save_pretrained(tmp_path / "ckpt", {"tokenizer": tiny}, index_extra={"note": "test"})
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index["components"] == {"tokenizer": "CViViT"} and index["note"] == "test"
    assert json.loads((tmp_path / "ckpt" / "tokenizer" / "config.json").read_text())["_class_name"] == "CViViT"
    loaded = load_component(tmp_path / "ckpt", "tokenizer")
    assert torch.equal(loaded.encode(clips), tiny.encode(clips))
    torch.testing.assert_close(loaded.decode_from_indices(tiny.encode(clips)), tiny.decode_from_indices(tiny.encode(clips)), atol=0, rtol=0)


def test_checkpoint_errors_are_clear(tiny, tmp_path):
    folder = save_pretrained(tmp_path / "ckpt", {"tokenizer": tiny})
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_component(tmp_path / "nowhere", "tokenizer")
    with pytest.raises(CheckpointError, match="no component 'unet'"):
        load_component(folder, "unet")
    weights = folder / "tokenizer" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        load_component(folder, "tokenizer")
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_component(folder, "tokenizer")
    # a config that does not match the weights: one line naming the file and the tensor
    folder = save_pretrained(tmp_path / "ckpt2", {"tokenizer": tiny})
    config_path = folder / "tokenizer" / "config.json"
    config = json.loads(config_path.read_text())
    config["dim"] = 48
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .* has shape"):
        load_component(folder, "tokenizer")
    config["_class_name"] = "os.system"
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown _class_name 'os.system'"):
        load_component(folder, "tokenizer")


def test_bf16_export_loads_as_fp32(tiny, clips, tmp_path):
    folder = save_pretrained(tmp_path / "ckpt", {"tokenizer": tiny}, dtype=torch.bfloat16)
    loaded = load_component(folder, "tokenizer")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded.decode_from_indices(loaded.encode(clips)).shape == clips.shape


def test_foreground_weight_makes_a_missing_object_cost_more(clips):
    """A reconstruction that drops the objects but keeps the backdrop must cost more with the
    foreground weight on: that is the whole point of the weight."""
    from kinema.nn.weighting import foreground_mask
    from kinema.tokenizer.losses import ReconstructionLoss

    mask = foreground_mask(clips)
    assert 0.005 < mask.mean() < 0.5  # objects (and their rims), not the backdrop
    median = clips.flatten(3).median(dim=-1).values[..., None, None]
    backdrop_only = median.expand_as(clips)
    plain = ReconstructionLoss()(backdrop_only, clips)["loss"]
    weighted = ReconstructionLoss(foreground=16)(backdrop_only, clips)["loss"]
    assert weighted > 3 * plain
    assert ReconstructionLoss(foreground=16)(clips, clips)["loss"] == 0


def test_freeze_encoder_keeps_codes_while_the_decoder_learns(clips):
    torch.manual_seed(0)
    tiny = CViViT(CViViTConfig.preset("tiny")).freeze_encoder().train()
    before = tiny.encode(clips)
    decoder_before = tiny.decoder.conv_out.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in tiny.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        tiny(clips)[1]["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(tiny.encode(clips), before)
    assert not torch.equal(tiny.decoder.conv_out.weight, decoder_before)


def test_local_codes_depend_only_on_their_own_patch(clips):
    """encoder_depth=0 + encoder_norm='channel': a patch far from any change keeps its code, so
    the same content always gets the same code. Attention before FSQ, or GroupNorm's
    frame-wide statistics, let a change anywhere move every code."""

    def encoder(**overrides) -> CViViT:
        torch.manual_seed(0)
        model = CViViT(CViViTConfig.preset("tiny", **overrides)).eval()
        for conv in model.encoder.modules():  # trained-like: fresh residual blocks are identities
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.normal_(conv.weight, std=0.2)
        return model

    changed = clips.clone()
    changed[:, :, :, :8, :8] = torch.rand_like(changed[:, :, :, :8, :8]) * 2 - 1  # the top-left token
    far = torch.zeros(8, 8, dtype=torch.bool)
    far[6:, 6:] = True  # 40 pixels away: beyond the conv encoder's receptive field (about 32)
    with torch.no_grad():
        local = encoder(encoder_depth=0, encoder_norm="channel")
        a, b = local.encode_continuous(clips), local.encode_continuous(changed)
        assert torch.equal(a[:, :, far], b[:, :, far])  # pre-quantization: so the codes too
        assert not torch.equal(a[:, :, :1, :1], b[:, :, :1, :1])
        for mixed in (encoder(encoder_norm="channel"), encoder(encoder_depth=0)):
            assert not torch.equal(mixed.encode_continuous(clips)[:, :, far], mixed.encode_continuous(changed)[:, :, far])
