"""Training in real processes: 2 gloo ranks under torchrun (DDP, or FSDP with `--fsdp`) equal
1 process with the same global batch, a SIGKILLed run resumes to exactly the weights of an
unbroken one, and every family's train command runs under torchrun.

Why the equality is exact (up to float summation order): `--data-shards 2` makes the data
stream two sub-streams whatever the number of processes (`kinema.train.distributed`). With
2 processes x batch 2, rank r reads shard r; with 1 process x batch 4 the one process reads
both shards and concatenates them, so every micro-batch holds the same 4 clips in both runs.
The tokenizer's loss is a mean over equally sized clips, so the mean over 4 clips equals
DDP's average of the two ranks' means over 2; it decodes every frame here (train_decode_frames
0), so it draws nothing at random (ranks draw from their own seeds, kinema.train.trainer.step_seed,
and a loss that draws would differ by its draws); weights start equal (DDP broadcasts rank 0's). fp32 keeps the remaining difference at rounding level: the losses and gradient norms agree
to 6 digits, yet AdamW turns the rounding noise of gradients that are ~0 in exact arithmetic
(conv biases just before a normalisation) into steps of up to ~1e-4 after 3 steps, hence the
tolerances: max 3e-4 per weight, 1e-4 relative overall, where a run that sees different clips
(batch 4 of shard 0 alone) is off by ~1.5e-2 per weight and ~2.5e-2 relative.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from kinema.checkpoint import save_pretrained
from kinema.models.imagen_video.data import stage_config
from kinema.models.imagen_video.train import load_stage
from kinema.nn.unet import VideoUNet
from kinema.tokenizer.cvivit import CViViT, CViViTConfig
from kinema.train import list_checkpoints

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
COMMON = ["tokenizer", "--preset", "tiny", "--precision", "fp32", "--threads", "1", "--no-auto-threads", "--no-progress",
          "--warmup-steps", "1", "--lr", "3e-3", "--save-every-minutes", "0", "--config-json", '{"train_decode_frames": 0}']


def launch(*args: str, procs: int = 1) -> list[str]:
    """`python -m kinema.train ARGS`, under torchrun when `procs` > 1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable]
    return [*launcher, "-m", "kinema.train", *args]


def train_cmd(output: Path, *args: str, procs: int = 1) -> list[str]:
    return launch(*COMMON, "--output", str(output), *args, procs=procs)


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path) -> str:
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    return log.read_text()


def weights(output: Path, step: int, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(output / "checkpoints" / f"step-{step:06d}" / f"{name}.safetensors"))


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    steps = ["--max-steps", "3", "--grad-accum", "2", "--data-shards", "2"]
    ddp = start(train_cmd(tmp_path / "ddp", *steps, "--batch-size", "2", procs=2), tmp_path / "ddp.log")
    one = start(train_cmd(tmp_path / "one", *steps, "--batch-size", "4"), tmp_path / "one.log")
    ddp_out, one_out = finish(ddp, tmp_path / "ddp.log"), finish(one, tmp_path / "one.log")
    assert "global batch = 2 per rank x 2 ranks x 2 accumulation = 8" in ddp_out
    assert "global batch = 4 per rank x 1 ranks x 2 accumulation = 8" in one_out
    assert ddp_out.count("done at step 3") == 1  # rank 0 alone reports
    for name in ("model", "ema"):
        a, b = weights(tmp_path / "ddp", 3, name), weights(tmp_path / "one", 3, name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=3e-4, rtol=0, msg=f"{name}/{k}")
        relative = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm() / torch.cat([a[k].flatten() for k in a]).norm()
        assert relative < 1e-4, (name, float(relative))


def test_sigkill_then_resume_equals_an_unbroken_run(tmp_path):
    args = ["--max-steps", "40", "--batch-size", "1", "--save-every", "2"]
    unbroken = start(train_cmd(tmp_path / "unbroken", *args), tmp_path / "unbroken.log")
    killed = start(train_cmd(tmp_path / "killed", *args), tmp_path / "killed.log")
    deadline = time.monotonic() + 90
    while len(list_checkpoints(tmp_path / "killed")) < 2:  # two, so one can be damaged below
        assert killed.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run finished before it was killed; nothing was tested"
    # damage the newest checkpoint: it must be refused and the one before it used
    newest = list_checkpoints(tmp_path / "killed")[-1]
    model_file = newest / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    resumed_out = finish(start(train_cmd(tmp_path / "killed", *args, "--resume"), tmp_path / "resumed.log"), tmp_path / "resumed.log")
    assert f"refusing damaged checkpoint {newest.name}" in resumed_out and "truncated" in resumed_out
    assert "resumed from" in resumed_out and "done at step 40" in resumed_out
    finish(unbroken, tmp_path / "unbroken.log")
    for name in ("model", "ema"):
        a, b = weights(tmp_path / "unbroken", 40, name), weights(tmp_path / "killed", 40, name)
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"{name}/{k}")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float, relative: float, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=f"{what}/{k}")
    off = torch.cat([(a[k] - b[k]).flatten() for k in a]).norm() / torch.cat([a[k].flatten() for k in a]).norm()
    assert off < relative, (what, float(off))


def exported(output: Path, component: str) -> dict[str, torch.Tensor]:
    return load_file(str(output / "final" / component / "model.safetensors"))


def test_fsdp_equals_one_process_and_resumes(tmp_path):
    """`--fsdp`: 2 ranks holding half of every parameter, gradient and Adam moment train as 1
    process with the same global batch (as DDP does, test above); the checkpoints are the
    usual whole tensors, and a sharded run resumes from them. Measured: max 9e-5 per weight,
    1e-5 relative after 4 steps, where the same run 2 steps earlier is off by 3e-3 and 2e-2."""
    steps = ["--max-steps", "4", "--save-every", "2", "--grad-accum", "2", "--data-shards", "2"]
    fsdp_cmd = train_cmd(tmp_path / "fsdp", *steps, "--batch-size", "2", "--fsdp", procs=2)
    fsdp = start(fsdp_cmd, tmp_path / "fsdp.log")
    one = start(train_cmd(tmp_path / "one", *steps, "--batch-size", "4"), tmp_path / "one.log")
    fsdp_out = finish(fsdp, tmp_path / "fsdp.log")
    assert "FSDP: parameters, gradients and optimizer state sharded over 2 ranks" in fsdp_out
    final = exported(tmp_path / "fsdp", "tokenizer")
    # resume the sharded run from step 2: it must reach the same step 4
    shutil.rmtree(tmp_path / "fsdp" / "checkpoints" / "step-000004")
    shutil.rmtree(tmp_path / "fsdp" / "final")
    resumed_out = finish(start([*fsdp_cmd, "--resume"], tmp_path / "resumed.log"), tmp_path / "resumed.log")
    assert "resumed from" in resumed_out and "step-000002" in resumed_out and resumed_out.count("done at step 4") == 1
    finish(one, tmp_path / "one.log")
    for name in ("model", "ema"):
        assert_same_weights(weights(tmp_path / "fsdp", 4, name), weights(tmp_path / "one", 4, name), 3e-4, 1e-4, name)
    # final/ holds the EMA gathered whole: exactly the checkpoint's, in the export dtype
    ema = weights(tmp_path / "fsdp", 4, "ema")
    for k in ema:
        torch.testing.assert_close(final[k], ema[k].to(final[k].dtype), atol=0, rtol=0, msg=k)


def family_runs(tmp_path: Path, family: list[str], component: str, final_dtype: torch.dtype) -> None:
    """`torchrun -m kinema.train FAMILY` under DDP writes checkpoints; an FSDP run resumed from
    the DDP run's step 1 reaches its step 2 (same weights, same data, same RNG), and exports
    its EMA gathered whole. (Resuming gives both the same start: the families draw their
    initial weights from an unseeded RNG.) Measured: FSDP equals DDP to 2e-8 per weight; one
    step of training moves weights by 3e-4 to 5e-4, 1.5e-3 to 3.6e-3 relative."""
    common = [*family, "--max-steps", "2", "--save-every", "1", "--warmup-steps", "1", "--precision", "fp32",
              "--threads", "1", "--no-progress", "--save-every-minutes", "0"]
    ddp_out = finish(start(launch(*common, "-o", str(tmp_path / "ddp"), procs=2), tmp_path / "ddp.log"), tmp_path / "ddp.log")
    assert ddp_out.count("global batch = 2 per rank x 2 ranks x 1 accumulation = 4") == 1
    runs = {"ddp": tmp_path / "ddp", "fsdp": tmp_path / "fsdp"}
    if component != "transformer":  # imagen-video: one run folder per stage
        runs = {k: v / component for k, v in runs.items()}
    assert [p.name for p in list_checkpoints(runs["ddp"])] == ["step-000001", "step-000002"]
    shutil.copytree(runs["ddp"] / "checkpoints" / "step-000001", runs["fsdp"] / "checkpoints" / "step-000001")
    fsdp_out = finish(start(launch(*common, "-o", str(tmp_path / "fsdp"), "--fsdp", "--resume", procs=2), tmp_path / "fsdp.log"), tmp_path / "fsdp.log")
    assert "resumed from" in fsdp_out and "FSDP: parameters, gradients and optimizer state sharded over 2 ranks" in fsdp_out
    for name in ("model", "ema"):
        assert_same_weights(weights(runs["fsdp"], 2, name), weights(runs["ddp"], 2, name), 1e-4, 1e-5, name)
    final, ema = exported(runs["fsdp"], component), weights(runs["fsdp"], 2, "ema")
    assert final.keys() == ema.keys()
    for k in ema:
        torch.testing.assert_close(final[k], ema[k].to(final_dtype), atol=0, rtol=0, msg=k)


def test_phenaki_trains_under_torchrun_with_ddp_and_fsdp(tmp_path):
    tokenizer = save_pretrained(tmp_path / "tok", {"tokenizer": CViViT(CViViTConfig.preset("tiny"))})
    family_runs(tmp_path, ["phenaki", "--tokenizer", str(tokenizer), "--batch-size", "2", "--dim", "32", "--depth", "1"], "transformer", torch.float32)
    assert (tmp_path / "fsdp" / "pipeline" / "model_index.json").is_file()


def test_imagen_video_base_trains_under_torchrun_with_ddp_and_fsdp(tmp_path):
    family_runs(tmp_path, ["imagen-video", "--stage", "base", "--batch-size", "2", "--preset", "tiny"], "base", torch.bfloat16)


def test_imagen_video_distills_under_torchrun(tmp_path):
    """Progressive distillation in 2 DDP processes: the student never runs without text, so
    its null-text embeddings get no gradient, which DDP must be told (the first CPU run
    stopped at its second step with DDP's "finished reduction" error). One round (4 -> 2
    steps) writes the distilled stage; the null-text embeddings stay the teacher's, the rest
    of the student moves."""
    torch.manual_seed(0)
    teacher = VideoUNet(stage_config("base", "tiny"))
    folder = save_pretrained(tmp_path / "teacher", {"base": teacher}, dtype=None)
    args = ["imagen-video", "--stage", "distill", "--teacher", str(folder), "--teacher-steps", "4", "--student-steps", "2",
            "--batch-size", "2", "--preset", "tiny", "--max-steps", "2", "--warmup-steps", "1", "--lr", "1e-3", "--precision", "fp32",
            "--export-dtype", "float32", "--threads", "1", "--no-progress", "--save-every-minutes", "0", "-o", str(tmp_path / "run")]
    out = finish(start(launch(*args, procs=2), tmp_path / "log"), tmp_path / "log")
    assert "global batch = 2 per rank x 2 ranks x 1 accumulation = 4" in out
    student = load_stage(tmp_path / "run" / "base_distilled" / "final", "base_distilled")
    before, after = teacher.state_dict(), student.state_dict()
    assert torch.equal(after["null_text"], before["null_text"]) and torch.equal(after["null_pooled"], before["null_pooled"])
    assert any(not torch.equal(after[k], before[k]) for k in before if not k.startswith("null_"))


def test_a_launch_this_machine_cannot_serve_is_one_clear_line(tmp_path):
    """Rank variables without torchrun's rendezvous (or more processes than GPUs) stop
    before any work with one line and exit code 2, not a traceback from deep in torch."""
    env = {**ENV, "WORLD_SIZE": "2", "RANK": "0"}
    env.pop("MASTER_ADDR", None)
    proc = subprocess.run(train_cmd(tmp_path / "run", "--max-steps", "1"), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: WORLD_SIZE=2 but no MASTER_ADDR: start multi-process training with torchrun"]
    assert not (tmp_path / "run").exists()
