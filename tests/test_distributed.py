"""Training in real processes: 2 gloo ranks under torchrun equal 1 process with the same
global batch, and a SIGKILLed run resumes to exactly the weights of an unbroken one.

Why the equality is exact (up to float summation order): `--data-shards 2` makes the data
stream two sub-streams whatever the number of processes (`kinema.train.distributed`). With
2 processes x batch 2, rank r reads shard r; with 1 process x batch 4 the one process reads
both shards and concatenates them, so every micro-batch holds the same 4 clips in both runs.
The tokenizer's loss is a mean over equally sized clips, so the mean over 4 clips equals
DDP's average of the two ranks' means over 2; every rank draws the same decoded frames from
the same seeded torch RNG, as the single process does; weights start equal (DDP broadcasts
rank 0's). fp32 keeps the remaining difference at rounding level: the losses and gradient norms agree
to 6 digits, yet AdamW turns the rounding noise of gradients that are ~0 in exact arithmetic
(conv biases just before a normalisation) into steps of up to ~1e-4 after 3 steps, hence the
tolerances: max 3e-4 per weight, 1e-4 relative overall, where a run that sees different clips
(batch 4 of shard 0 alone) is off by ~1.5e-2 per weight and ~2.5e-2 relative.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from kinema.train import list_checkpoints

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
COMMON = ["tokenizer", "--preset", "tiny", "--precision", "fp32", "--threads", "1", "--no-auto-threads", "--no-progress",
          "--warmup-steps", "1", "--lr", "3e-3", "--save-every-minutes", "0"]


def train_cmd(output: Path, *args: str, procs: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable]
    return [*launcher, "-m", "kinema.train", *COMMON, "--output", str(output), *args]


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
