"""kinema.text: the bundled MiniLM encoder, offline, through the TextEncoder interface."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # guard: a test that reaches the network fails
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from kinema.text import TextEncoder, get_text_encoder, load_text_encoder, minilm_path  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return get_text_encoder("minilm")


def test_shapes_dtypes_and_mask(encoder: TextEncoder) -> None:
    sentences = ["a red circle", "a small blue square moves slowly to the left", ""]
    out = encoder.encode(sentences)
    assert encoder.dim == 384 and encoder.name == "minilm"
    assert out.tokens.shape == (3, encoder.max_length, 384) and out.tokens.dtype == torch.float32
    assert out.mask.shape == (3, encoder.max_length) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (3, 384) and out.pooled.dtype == torch.float32
    # [CLS] + word pieces + [SEP]; the mask is a prefix of real tokens, zeros after.
    lengths = out.mask.sum(dim=1).tolist()
    expected = [len(encoder.tokenizer(s)["input_ids"]) for s in sentences]
    assert lengths == expected and lengths[1] > lengths[0] > lengths[2] == 2
    for row, n in zip(out.mask, lengths):
        assert row[:n].all() and not row[n:].any()
    assert (out.tokens[~out.mask] == 0).all() and (out.tokens[out.mask].abs().sum(-1) > 0).all()


def test_pooled_is_unit_norm(encoder: TextEncoder) -> None:
    pooled = encoder.encode(["a green triangle bounces", "the yellow star spins"]).pooled
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(2))


def test_similar_sentences_are_closer_than_unrelated(encoder: TextEncoder) -> None:
    pooled = encoder.encode(
        ["a red circle moves up", "a red ball rises", "a blue square on a gray background", "the camera zooms out in the desert"]
    ).pooled
    similar = pooled[0] @ pooled[1]
    unrelated = pooled[2] @ pooled[3]
    assert similar > unrelated + 0.2  # measured: 0.60 vs 0.13
    assert similar > pooled[1] @ pooled[3]


def test_cache_returns_identical_tensors_without_running_the_model() -> None:
    encoder = load_text_encoder("minilm", max_length=16)
    first = encoder.encode(["a purple hexagon slides right", "a red circle"])
    calls = encoder.model_calls
    second = encoder.encode(["a red circle", "a purple hexagon slides right"])
    assert encoder.model_calls == calls  # all hits
    assert torch.equal(second.tokens[0], first.tokens[1]) and torch.equal(second.pooled[1], first.pooled[0])
    # A mixed batch runs the model once, on the miss only, and keeps the order.
    mixed = encoder.encode(["a red circle", "an orange star", "a red circle"])
    assert encoder.model_calls == calls + 1
    assert torch.equal(mixed.pooled[0], first.pooled[1]) and torch.equal(mixed.pooled[2], first.pooled[1])


def test_long_sentences_are_truncated_to_max_length() -> None:
    encoder = load_text_encoder("minilm", max_length=8)
    out = encoder.encode(["a red circle moves up and then a blue square moves down and left"])
    assert out.tokens.shape == (1, 8, 384) and out.mask.all()


def test_a_local_folder_path_works(encoder: TextEncoder) -> None:
    from_folder = load_text_encoder(str(minilm_path()))
    assert from_folder.dim == 384 and from_folder.name == minilm_path().name
    torch.testing.assert_close(from_folder.encode(["a red circle"]).pooled, encoder.encode(["a red circle"]).pooled)


def test_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a known name.*nor a local folder"):
        load_text_encoder(tmp_path / "no-such-encoder")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_text_encoder(tmp_path)


def test_singleton_loads_once(encoder: TextEncoder) -> None:
    assert get_text_encoder() is encoder and get_text_encoder("all-MiniLM-L6-v2") is encoder


def test_embedding_helpers(encoder: TextEncoder) -> None:
    both = encoder.encode(["a red circle", "a blue square"])
    assert len(both) == 2 and torch.equal(both[1].pooled, encoder.encode(["a blue square"]).pooled)
    assert both[0].tokens.shape == (1, encoder.max_length, 384)
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a red circle")


def linked_copy(folder, like) -> None:
    """`folder`: a copy of the encoder folder `like`, its files linked, not copied."""
    for source in like.rglob("*"):
        if source.is_file():
            (folder / source.relative_to(like)).parent.mkdir(parents=True, exist_ok=True)
            (folder / source.relative_to(like)).symlink_to(source)


def test_a_folder_named_like_the_alias_is_that_folder(tmp_path, encoder: TextEncoder) -> None:
    """Only the name "minilm" means the bundled encoder; a folder called minilm is loaded."""
    fake = tmp_path / "fake" / "minilm"
    fake.mkdir(parents=True)
    (fake / "config.json").write_text('{"model_type": "bert"}')  # no weights
    with pytest.raises(OSError, match=str(fake)):
        get_text_encoder(fake)
    real = tmp_path / "real" / "minilm"
    linked_copy(real, minilm_path())
    local = get_text_encoder(real)
    assert local is not encoder and local.path == real and local.source == str(real.resolve())
    assert encoder.source == "minilm" and load_text_encoder(minilm_path()).source == "minilm"


def test_a_saved_model_loads_its_own_text_encoder_folder(tmp_path) -> None:
    """model_index.json names a local encoder by its path (a basename could not be found
    again), and the sampler's scheduler/config.json is written inside the model folder."""
    import json

    import kinema
    from kinema.models.phenaki.maskgit import MaskGit, MaskGitConfig
    from kinema.models.phenaki.pipeline import PhenakiPipeline
    from kinema.tokenizer.cvivit import CViViT, CViViTConfig

    folder = tmp_path / "my-encoder"
    linked_copy(folder, minilm_path())
    tokenizer = CViViT(CViViTConfig.preset("tiny"))
    transformer = MaskGit(MaskGitConfig(fsq_levels=tokenizer.config.fsq_levels, grid=tokenizer.config.grid_size, dim=32, depth=1, heads=2, dim_head=16))
    saved = PhenakiPipeline(tokenizer, transformer, get_text_encoder(folder)).save_pretrained(tmp_path / "model")
    assert json.loads((saved / "model_index.json").read_text())["text_encoder"] == str(folder.resolve())
    assert (saved / "scheduler" / "config.json").is_file()
    assert kinema.load_pipeline(saved).text_encoder.path == folder


def test_kinema_minilm_names_the_default_encoder_folder(tmp_path, monkeypatch, encoder: TextEncoder) -> None:
    """On a machine without the package, $KINEMA_MINILM points "minilm" at a copy of the
    model: it encodes as the bundled one does and a model folder still records "minilm"."""
    copy = tmp_path / "node" / "all-MiniLM-L6-v2"
    linked_copy(copy, minilm_path())
    monkeypatch.setenv("KINEMA_MINILM", str(copy))
    there = load_text_encoder("minilm")
    assert there.path == copy and there.source == "minilm"
    sentence = ["a red circle moves up in the desert"]
    assert torch.equal(there.encode(sentence).tokens, encoder.encode(sentence).tokens)
    monkeypatch.setenv("KINEMA_MINILM", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="KINEMA_MINILM"):
        load_text_encoder("minilm")
