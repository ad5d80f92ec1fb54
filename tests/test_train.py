"""The trainer: learning, exact resume, damaged checkpoints, export — on a tiny real C-ViViT."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kinema.checkpoint import load_component, save_pretrained
from kinema.data.shapes import ShapesVideoDataset
from kinema.tokenizer import CViViT, CViViTConfig
from kinema.train import TrainConfig, Trainer, list_checkpoints, load_checkpoint_model, lr_at
from kinema.train.cli import tokenizer_loss, train_app
from kinema.train.trainer import HELD_OUT_RANK, STATE_JSON, step_seed


def make_trainer(output, max_steps, save_every=0, lr=3e-3, seed=0, batch_size=2, init_seed=None, data_workers=0, max_minutes=None, grad_accum=1, log_every=5,
                 loss=tokenizer_loss, held_out=None, held_out_batches=0) -> Trainer:
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = CViViT(CViViTConfig.preset("tiny"))
    data = ShapesVideoDataset(batch_size=batch_size, seed=seed)
    config = TrainConfig(output=str(output), max_steps=max_steps, lr=lr, warmup_steps=3, save_every=save_every,
                         ema_decay=0.9, seed=seed, progress=False, log_every=log_every, data_workers=data_workers,
                         max_minutes=max_minutes, grad_accum=grad_accum, held_out_batches=held_out_batches)
    return Trainer(model, config, data.batch, loss, export_name="tokenizer", held_out=held_out)


def test_shapes_batches_are_a_function_of_their_index():
    a, b = ShapesVideoDataset(batch_size=2, seed=1), ShapesVideoDataset(batch_size=2, seed=1)
    assert torch.equal(a.batch(5).video, b.batch(5).video) and a.batch(5).specs == b.batch(5).specs
    assert not torch.equal(a.batch(5).video, a.batch(6).video)
    assert not torch.equal(a.batch(5).video, ShapesVideoDataset(batch_size=2, seed=1, rank=1).batch(5).video)
    video = a.batch(0).video
    assert video.shape == (2, 3, 16, 64, 64) and video.dtype == torch.float32
    assert float(video.min()) >= -1 and float(video.max()) <= 1


def test_lr_schedule_warms_up_then_decays():
    config = TrainConfig(output="x", max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1) and lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(55, config) == pytest.approx(0.55) and lr_at(100, config) == pytest.approx(0.1)


def test_loss_falls(tmp_path):
    held_out = ShapesVideoDataset(batch_size=4, seed=99).batch(0).video

    def loss_of(model):
        model.eval()
        with torch.no_grad():
            return float(model(held_out)[1]["loss"])

    trainer = make_trainer(tmp_path, max_steps=30)
    before = loss_of(trainer.model)
    trainer.train()
    after = loss_of(trainer.model)
    assert after < 0.7 * before, (before, after)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 30 and "steps_per_s" in lines[-1]
    # the export is an inference folder with the EMA weights
    exported = load_component(tmp_path / "final", "tokenizer")
    for p, q in zip(exported.parameters(), trainer.ema.model.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_the_held_out_loss_is_the_emas_on_the_same_batches_and_draws_and_leaves_training_alone(tmp_path):
    """--held-out-batches: at each checkpoint the EMA is scored on the same held-out batches
    with the same random draws, so a rise means the model got worse, not unlucky; the run
    trains exactly as without it."""
    held = ShapesVideoDataset(batch_size=2, seed=0, rank=HELD_OUT_RANK)

    def drawing_loss(model, batch):  # draws from the RNG, as the diffusion and MaskGIT losses do
        return {**tokenizer_loss(model, batch), "draw": torch.rand(())}

    plain = make_trainer(tmp_path / "a", max_steps=6, save_every=3, loss=drawing_loss)
    plain.train()
    scored = make_trainer(tmp_path / "b", max_steps=6, save_every=3, loss=drawing_loss, held_out=held.batch, held_out_batches=2)
    scored.train()
    for p, q in zip(plain.model.parameters(), scored.model.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    held_out = [r for r in records if "held_out_loss" in r]
    assert [r["step"] for r in held_out] == [3, 6] and not any("held_out_loss" in r for r in (json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()))
    with torch.no_grad(), scored._autocast():
        by_hand = np.mean([float(tokenizer_loss(scored.ema.model, held.batch(i))["loss"]) for i in range(2)])
    assert held_out[-1]["held_out_loss"] == pytest.approx(by_hand, abs=2e-6)
    rng = torch.get_rng_state()
    first, second = scored.held_out_loss(), scored.held_out_loss()
    assert first == second and torch.equal(rng, torch.get_rng_state())
    assert held_out[-1]["held_out_draw"] == pytest.approx(first["held_out_draw"], abs=1e-6)
    with pytest.raises(ValueError, match="held_out"):
        make_trainer(tmp_path / "c", max_steps=1, held_out_batches=1)


def test_a_value_measured_in_some_micro_batches_is_logged_as_their_mean(tmp_path):
    """A loss term with nothing to measure in a micro-batch says NaN there; the log averages
    the micro-batches that measured it instead of counting the others as zero."""
    calls = []

    def loss_fn(model, batch):
        _, out = model(batch.video)
        calls.append(len(calls))
        out["sparse"] = torch.tensor(float(len(calls)) if len(calls) % 2 else float("nan"))  # micro-batches 1, 3, 5, ...
        out["never"] = torch.tensor(float("nan"))
        return out

    torch.manual_seed(0)
    config = TrainConfig(output=str(tmp_path), max_steps=2, lr=1e-3, warmup_steps=1, grad_accum=4, progress=False, log_every=1)
    Trainer(CViViT(CViViTConfig.preset("tiny")), config, ShapesVideoDataset(batch_size=1, seed=0).batch, loss_fn, export_name="tokenizer").train()
    def strict(constant):  # NaN is not JSON: jq and browsers refuse a file that holds it
        raise ValueError(f"{constant} in metrics.jsonl")

    lines = [json.loads(line, parse_constant=strict) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["sparse"] for line in lines] == [2.0, 6.0]  # (1 + 3) / 2, (5 + 7) / 2
    assert not any("never" in line for line in lines), "a value nothing measured is left out of the log"
    assert all(np.isfinite(line["loss"]) for line in lines)


def test_resume_reproduces_an_unbroken_run(tmp_path):
    unbroken = make_trainer(tmp_path / "a", max_steps=6)
    unbroken.train()
    first = make_trainer(tmp_path / "b", max_steps=3)
    first.train()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-000003"]
    second = make_trainer(tmp_path / "b", max_steps=6, init_seed=123)  # different init: everything must come from disk
    second.train(resume=True)
    assert second.step == 6
    for p, q in zip(unbroken.model.parameters(), second.model.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    for p, q in zip(unbroken.ema.model.parameters(), second.ema.model.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_the_log_holds_each_step_once_across_a_resume(tmp_path):
    """A run that dies after its last checkpoint logged steps it will log again when resumed:
    the log keeps one record per step, and a fresh run into the folder starts a new log."""
    make_trainer(tmp_path, max_steps=4, save_every=2, log_every=1).train()
    shutil.rmtree(list_checkpoints(tmp_path)[-1])  # as if it had died after step 4's log line, before its checkpoint
    assert list_checkpoints(tmp_path)[-1].name == "step-000002"
    make_trainer(tmp_path, max_steps=4, save_every=2, log_every=1).train(resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    for checkpoint in list_checkpoints(tmp_path):
        shutil.rmtree(checkpoint)
    make_trainer(tmp_path, max_steps=2, log_every=1).train()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_spent_time_budget_ends_the_run_like_max_steps_and_resume_finishes_it(tmp_path, capsys):
    """--max-minutes: a session-sized chunk of a long run. The run stops after the budget with a
    checkpoint and a final/ export, and --resume carries the same schedule on to max_steps."""
    unbroken = make_trainer(tmp_path / "a", max_steps=6)
    unbroken.train()
    chunk = make_trainer(tmp_path / "b", max_steps=6, max_minutes=1e-9)  # spent after the first step
    chunk.train()
    assert chunk.step == 1 and [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-000001"]
    assert json.loads((tmp_path / "b" / "final" / "model_index.json").read_text())["step"] == 1
    assert "time budget of 1e-09 min spent at step 1" in capsys.readouterr().out
    rest = make_trainer(tmp_path / "b", max_steps=6, init_seed=123)
    rest.train(resume=True)
    assert rest.step == 6
    for (name, a), b in zip(unbroken.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(output="x", max_minutes=0)


def test_worker_processes_make_the_same_batches_in_the_same_order(tmp_path):
    """--data-workers only moves batch making into other processes: the run is unchanged,
    resumed runs included (the workers start at the saved data position)."""
    plain = make_trainer(tmp_path / "plain", max_steps=6)
    plain.train()
    ahead = make_trainer(tmp_path / "ahead", max_steps=3, save_every=3, data_workers=2)
    ahead.train()
    ahead = make_trainer(tmp_path / "ahead", max_steps=6, data_workers=2)
    ahead.train(resume=True)
    for (name, a), b in zip(plain.model.state_dict().items(), ahead.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_truncated_newest_checkpoint_is_skipped(tmp_path, capsys):
    make_trainer(tmp_path, max_steps=4, save_every=2).train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000004"]
    newest = tmp_path / "checkpoints" / "step-000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = make_trainer(tmp_path, max_steps=4)
    assert resumed.resume().name == "step-000002" and resumed.step == 2
    out = capsys.readouterr().out
    assert "refusing damaged checkpoint step-000004" in out and "model.safetensors" in out
    # the checkpoint's own model (EMA weights) loads for evaluation
    assert isinstance(load_checkpoint_model(tmp_path / "checkpoints" / "step-000002"), CViViT)
    # the damaged one is set aside, so the run's own new checkpoints are the newest and kept
    assert (tmp_path / "checkpoints" / "damaged-step-000004").is_dir()
    make_trainer(tmp_path, max_steps=8, save_every=2).train(resume=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000006", "step-000008"]


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    """Its pruning would remove the other run's checkpoints (or its own, if theirs are
    further on), and a later --resume would mix the two."""
    make_trainer(tmp_path, max_steps=2, save_every=2).train()
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(tmp_path, max_steps=4).train()
    args = ["tokenizer", "--output", str(tmp_path), "--preset", "tiny", "--batch-size", "1", "--max-steps", "2", "--no-progress"]
    result = CliRunner().invoke(train_app, args)
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # typer's error box, unwrapped
    assert result.exit_code == 2 and "already holds the checkpoints of a run (newest: step-000002)" in said


def test_each_step_and_rank_draws_from_its_own_seed(tmp_path):
    """Ranks must not draw the same masks, noise and timesteps for their clips; a resumed run
    needs no saved RNG state, and continues at the saved data position even with another
    --grad-accum."""
    assert len({step_seed(0, step, rank) for step in range(50) for rank in range(4)}) == 200
    assert step_seed(0, 3, 1) == step_seed(0, 3, 1) != step_seed(1, 3, 1)
    make_trainer(tmp_path, max_steps=3, save_every=3).train()
    resumed = make_trainer(tmp_path, max_steps=4, grad_accum=2)
    resumed.train(resume=True)
    state = json.loads((tmp_path / "checkpoints" / "step-000004" / STATE_JSON).read_text())
    assert resumed.data_position == state["data_position"] == 3 + 2


def test_cli_trains_and_resumes(tmp_path):
    runner = CliRunner()
    args = ["tokenizer", "--output", str(tmp_path), "--preset", "tiny", "--batch-size", "1", "--max-steps", "2",
            "--save-every", "1", "--warmup-steps", "1", "--no-progress"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "final" / "model_index.json").is_file()
    args[args.index("--max-steps") + 1] = "3"
    result = runner.invoke(train_app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "done at step 3" in result.output


@pytest.mark.parametrize("args, message", [
    (["tokenizer", "--config-json", "{bad"], "--config-json is not JSON"),
    (["tokenizer", "--config-json", '{"depht": 2}'], "CViViTConfig has no field 'depht'"),
    (["tokenizer", "--preset", "huge"], "unknown C-ViViT preset 'huge'"),
    (["imagen-video", "--stage", "base", "--config-json", '{"chanels": 8}'], "VideoUNetConfig has no field 'chanels'"),
    (["imagen-video", "--stage", "base", "--preset", "huge"], "unknown preset 'huge'"),
    (["imagen-video", "--stage", "distill"], "no base teacher to distil"),
    (["imagen-video", "--stage", "distill", "--teacher-steps", "2048", "--student-steps", "1024"], "divides 1024"),
])
def test_a_train_commands_user_errors_are_one_line(tmp_path, args, message):
    """A typo in an option or a missing teacher: one line and exit code 2, no traceback, nothing written."""
    result = CliRunner().invoke(train_app, [*args, "--output", str(tmp_path / "run"), "--max-steps", "1", "--no-progress"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (TypeError, KeyError))
    assert not list((tmp_path / "run").rglob("*.safetensors"))


def test_cli_fine_tunes_the_decoder_of_a_checkpoint_without_changing_its_codes(tmp_path):
    """--init-from + --freeze-encoder: the decoder learns on, the codes a MaskGIT was trained
    on stay exactly the same."""
    runner = CliRunner()
    base = ["--preset", "tiny", "--batch-size", "1", "--max-steps", "2", "--save-every", "2", "--warmup-steps", "1", "--no-progress"]
    assert runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "a"), *base]).exit_code == 0
    start = list_checkpoints(tmp_path / "a")[-1]
    result = runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "b"), "--init-from", str(start), "--freeze-encoder",
                                       "--config-json", '{"foreground_weight": 8}', "--lr", "1e-2", *base])
    assert result.exit_code == 0, result.output
    before, after = load_checkpoint_model(start), load_checkpoint_model(list_checkpoints(tmp_path / "b")[-1])
    clips = ShapesVideoDataset(batch_size=2, seed=5).batch(0).video
    assert torch.equal(before.encode(clips), after.encode(clips))
    assert not torch.equal(before.decoder.conv_out.weight, after.decoder.conv_out.weight)
    bad = runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "c"), "--init-from", str(tmp_path / "nowhere"), *base])
    assert bad.exit_code == 2 and "--init-from" in bad.output


def test_cli_warm_starts_into_a_changed_config(tmp_path):
    """--init-from into a config without the encoder's transformer: every weight the two
    share is copied, the dropped layer is reported; a shape change is one clear error."""
    runner = CliRunner()
    base = ["--preset", "tiny", "--batch-size", "1", "--max-steps", "1", "--save-every", "1", "--warmup-steps", "1", "--no-progress", "--lr", "0"]
    assert runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "a"), *base]).exit_code == 0
    start = list_checkpoints(tmp_path / "a")[-1]
    result = runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "b"), "--init-from", str(start), "--config-json", '{"encoder_depth": 0}', *base])
    assert result.exit_code == 0, result.output
    assert "0 tensors new here start fresh" in result.output and "are unused" in result.output
    before, after = load_checkpoint_model(start), load_checkpoint_model(list_checkpoints(tmp_path / "b")[-1])
    assert after.config.encoder_depth == 0 and len(after.enc_transformer.blocks) == 0
    torch.testing.assert_close(after.decoder.conv_out.weight, before.decoder.conv_out.weight)
    bad = runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "c"), "--init-from", str(start), "--config-json", '{"dim": 48}', *base])
    assert bad.exit_code == 2 and "--init-from" in bad.output and "here" in bad.output
    folder = save_pretrained(tmp_path / "model", {"tokenizer": after})  # a model folder: its tokenizer
    result = runner.invoke(train_app, ["tokenizer", "--output", str(tmp_path / "d"), "--init-from", str(folder), "--config-json", '{"encoder_depth": 0}', *base])
    assert result.exit_code == 0 and "0 tensors new here start fresh" not in result.output, result.output
    torch.testing.assert_close(load_checkpoint_model(list_checkpoints(tmp_path / "d")[-1]).decoder.conv_out.weight, after.decoder.conv_out.weight)


def test_thread_tuner_keeps_the_faster_choice():
    from kinema.train.trainer import ThreadTuner

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, probe_every=10, probe_steps=3, log=lambda msg: None)
        for _ in range(6):  # the first probe comes after 2 x probe_steps steps
            tuner.after_step(1.0)
        assert torch.get_num_threads() == 1  # probing: 1 warm-up step + 3 timed steps
        for _ in range(4):
            tuner.after_step(0.4)
        assert tuner.current == 1 and torch.get_num_threads() == 1
        for _ in range(10):  # the next probe (2 threads, slower) changes nothing
            tuner.after_step(0.4 if torch.get_num_threads() == 1 else 1.0)
        assert tuner.current == 1
    finally:
        torch.set_num_threads(before)


def test_cli_trains_on_a_captioned_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "captions.csv").write_text("path,caption\na.png,noise\nb.png,more noise\n")
    args = ["tokenizer", "--data", str(tmp_path), "--output", str(tmp_path / "run"), "--preset", "tiny", "--batch-size", "2",
            "--max-steps", "1", "--warmup-steps", "1", "--no-progress", "--no-auto-threads"]
    result = CliRunner().invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert "global batch = 2 per rank x 1 ranks x 1 accumulation = 2" in result.output
    index = json.loads((tmp_path / "run" / "final" / "model_index.json").read_text())
    assert tmp_path.name in json.dumps(index)  # the export names what it was trained on
    result = CliRunner().invoke(train_app, ["tokenizer", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")])
    assert result.exit_code != 0 and "no dataset" in result.output


def test_scene_mix_weights_the_kinds_of_single_scene_examples(tmp_path):
    """--scene-mix 'two objects=...': more (or only) two-object scenes, where binding each
    colour and shape to its own object is learned; a bad mix is a one-line usage error
    before anything is written."""
    from kinema.data.shapes import captioned_example, parse_scene_mix
    from kinema.world.language import parse

    assert parse_scene_mix("two objects=2") == {"one object": 1.0, "two objects": 2.0, "camera": 1.0}
    only_two = parse_scene_mix("one object=0, camera=0")
    rng = np.random.default_rng(0)
    for _ in range(6):
        frames, context, text = captioned_example(rng, story_share=0.0, scene_mix=only_two)
        assert context is None and frames.shape == (16, 64, 64, 3)
        assert len(parse(text).objects) == 2, text
    for bad, why in (("three objects=1", "KIND=WEIGHT"), ("camera=lots", "must be a number"), ("camera=-1", "negative"),
                     ("one object=0,two objects=0,camera=0", "at least one")):
        with pytest.raises(ValueError, match=why):
            parse_scene_mix(bad)
    result = CliRunner().invoke(train_app, ["phenaki", "--tokenizer", str(tmp_path / "tok"), "-o", str(tmp_path / "run"), "--scene-mix", "three objects=1"])
    assert result.exit_code == 2 and "KIND=WEIGHT" in result.output
    assert not (tmp_path / "run").exists()
