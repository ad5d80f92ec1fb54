"""bf16 where the hardware has it, fp32 where it does not.

bf16 autocast halves memory traffic and, on CPUs with AMX or AVX-512 (and on CUDA GPUs
that support it), runs matmuls 2-6x faster than fp32. A CPU without them has no bf16
kernels at all: oneDNN falls back to reference code, and on a 2-core AVX2 EPYC a bf16
matmul ran at 0.001 TFLOP/s against fp32's 0.13, so a Phenaki clip took 7.5 s under
autocast and 1.1 s without. So every place that would autocast asks here first.

`KINEMA_PRECISION=bf16|fp32` forces one precision everywhere (to reproduce a number
measured under the other, or to test both paths); unset or `auto`, the device decides.
"""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("auto", "bf16", "fp32")
ENV = "KINEMA_PRECISION"


def default_device() -> torch.device:
    """Where kinema runs unless told: this process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """Whether `device` runs bf16 matmuls natively (not through emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:  # oneDNN's own test: AVX-512 (BW/VL/DQ) or AMX, which have bf16 kernels
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve(precision: str | None = None, device: str | torch.device = "cpu") -> str:
    """'bf16' or 'fp32': `precision` if given and not 'auto', else $KINEMA_PRECISION, else
    what the device runs fast."""
    explicit = precision not in (None, "auto")
    chosen = (precision if explicit else os.environ.get(ENV) or "auto").lower()
    if chosen not in PRECISIONS:
        source = "precision" if explicit else ENV
        raise ValueError(f"{source} must be one of {', '.join(PRECISIONS)}, got {chosen!r}")
    if chosen == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return chosen


def autocast(device: str | torch.device, precision: str | None = None) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` where it is fast (or forced), otherwise plain fp32."""
    device = torch.device(device)
    if resolve(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
