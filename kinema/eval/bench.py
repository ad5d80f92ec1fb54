"""`kinema bench MODEL`: how fast and how lean a model is on this machine.

Everything is measured in the same run, so ratios are honest: load time, the CLI's cold
start to a clip on disk, the warm 16-frame clip (median of N) against real time (8 fps),
a long story's time and peak memory (at 10 and at 60 sentences: the memory must not grow),
and one training step of each trained component, with its achieved TFLOP/s against this
machine's matmul peak in the precision it trains in (bf16 where the hardware has it,
precision.py), measured here first. With `vs`, the same size of another
implementation is timed beside it (versus.py).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..precision import autocast, resolve
from ..world import FPS, caption, random_story

if TYPE_CHECKING:
    from .versus import VersusReport


def matmul_peak(precision: str | None = None, n: int = 2048, seconds: float = 1.5) -> float:
    """Achieved TFLOP/s of a square matmul in the precision this machine trains in (or the
    one given): the yardstick for training steps."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if resolve(precision, device) == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up kernels
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def seconds_of(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of `fn()`, with a GPU's queued kernels finished on both sides of it."""
    wait = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wait()
    start = time.perf_counter()
    fn()
    wait()
    return time.perf_counter() - start


@dataclass
class StepTiming:
    name: str
    seconds: float
    tflop: float  # per step, forward + backward
    tflops: float  # achieved
    of_peak: float


def time_training_step(name: str, module: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], peak: float, repeats: int = 3) -> StepTiming:
    """Median seconds of forward + backward as the trainer runs it (bf16 autocast where the
    hardware has it), and FLOPs counted once."""
    module.train()
    device = next(module.parameters()).device
    with FlopCounterMode(display=False) as counter, autocast(device):
        loss_fn().backward()
    flop = counter.get_total_flops()

    def step() -> None:
        with autocast(device):
            loss = loss_fn()
        loss.backward()

    times = []
    for _ in range(repeats):
        module.zero_grad(set_to_none=True)
        times.append(seconds_of(step, device))
    module.zero_grad(set_to_none=True)
    module.eval()
    seconds = statistics.median(times)
    achieved = flop / seconds / 1e12
    return StepTiming(name, seconds, flop / 1e12, achieved, achieved / peak if peak else 0.0)


_STORY_SCRIPT = """
import json, sys, time, kinema
pipe = kinema.load_pipeline(sys.argv[1])
sentences = json.loads(sys.argv[2])
start = time.perf_counter()
pipe.story(sentences, seed=0, output=sys.argv[3])
seconds = time.perf_counter() - start
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_kb / 1024}))
"""


def story_run(model: str, sentences: list[str], output: Path) -> dict:
    """A story in a fresh process: its time and peak resident memory."""
    done = subprocess.run([sys.executable, "-c", _STORY_SCRIPT, model, json.dumps(sentences), str(output)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"story run failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class BenchReport:
    model: str
    device: str
    threads: int
    load_seconds: float
    cold_start_seconds: float
    warm_clip_seconds: float
    warm_clip_runs: int
    clip_fps: float
    realtime_factor: float  # generated seconds of video per wall second (1.0 = real time at 8 fps)
    story_sentences: int
    story_seconds: float
    story_peak_rss_mb: float
    short_story_peak_rss_mb: float
    precision: str  # what the training steps and the peak ran in: bf16 or fp32
    peak_tflops: float
    training_steps: list[StepTiming] = field(default_factory=list)
    versus: VersusReport | None = None  # `--vs`: the same size of another implementation

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("device", f"{self.device} ({self.threads} threads)"),
            ("load", f"{self.load_seconds:.2f} s"),
            ("CLI cold start → clip on disk", f"{self.cold_start_seconds:.2f} s"),
            (f"warm 16-frame clip (median of {self.warm_clip_runs})", f"{self.warm_clip_seconds:.2f} s"),
            ("frames/s (real time = 8)", f"{self.clip_fps:.1f}  ({self.realtime_factor:.2f}× real time)"),
            (f"{self.story_sentences}-sentence story ({self.story_sentences * 16} frames)", f"{self.story_seconds:.1f} s"),
            ("peak RSS: 10 vs " + str(self.story_sentences) + " sentences", f"{self.short_story_peak_rss_mb:.0f} MB vs {self.story_peak_rss_mb:.0f} MB"),
            (f"{self.precision} matmul peak (measured)", f"{self.peak_tflops:.2f} TFLOP/s"),
        ]
        for step in self.training_steps:
            rows.append((f"train step: {step.name}", f"{step.seconds:.2f} s, {step.tflop:.3f} TFLOP, {step.tflops:.2f} TFLOP/s = {100 * step.of_peak:.0f} % of peak"))
        if self.versus is not None:
            rows += self.versus.rows()
        return rows


def bench(
    model: str, *, warm_runs: int = 10, story_sentences: int = 60, vs: str | None = None, progress: Callable[[str], None] = lambda _: None
) -> BenchReport:
    from ..pipelines import load_pipeline
    from . import versus

    if vs is not None:  # an unknown name or a missing extra fails now, not after minutes of timing
        versus.check_competitor(vs)

    prompt = "a red circle moves to the right on a black background"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve(None, device)
    progress(f"{precision} matmul peak")
    peak = matmul_peak(precision)

    progress("load")
    start = time.perf_counter()
    pipe = load_pipeline(model)
    load_seconds = time.perf_counter() - start
    if vs is not None:
        versus.check_pipeline(pipe, vs)

    progress("warm clips")
    pipe(prompt, seed=0)  # warm-up
    times = []
    for i in range(warm_runs):
        start = time.perf_counter()
        pipe(prompt, seed=i)
        times.append(time.perf_counter() - start)
    warm = statistics.median(times)

    with tempfile.TemporaryDirectory() as tmp:
        progress("CLI cold start")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kinema", "generate", prompt, "--model", model, "-o", f"{tmp}/cold.npy"], capture_output=True, text=True)
        cold = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"kinema generate failed: {done.stderr.strip()}")
        sentences, _ = random_story(np.random.default_rng(0), story_sentences)
        texts = [caption(s) for s in sentences]
        progress("short story")
        short = story_run(model, texts[:10], Path(tmp) / "short.mp4")  # the same writer as the long one
        progress(f"{story_sentences}-sentence story")
        long = story_run(model, texts, Path(tmp) / "long.mp4")

    steps = []
    for name, module, loss_fn in pipe.training_examples():
        progress(f"training step: {name}")
        steps.append(time_training_step(name, module, loss_fn, peak))
    against = versus.compare(pipe, vs, peak=peak, runs=warm_runs, progress=progress) if vs is not None else None

    return BenchReport(
        model=model, device=device, threads=torch.get_num_threads(), load_seconds=load_seconds, cold_start_seconds=cold,
        warm_clip_seconds=warm, warm_clip_runs=warm_runs, clip_fps=16 / warm, realtime_factor=(16 / FPS) / warm,
        story_sentences=story_sentences, story_seconds=long["seconds"], story_peak_rss_mb=long["peak_rss_mb"],
        short_story_peak_rss_mb=short["peak_rss_mb"], precision=precision, peak_tflops=peak, training_steps=steps,
        versus=against,
    )


def report_json(report: BenchReport) -> str:
    return json.dumps(asdict(report), indent=2)
