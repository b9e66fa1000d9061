"""Runtime numeric precision of the voxel CNN: ``"fp32"`` or ``"bf16"``.

``bf16`` runs blocks 2–3 and the dense head as bfloat16 autocast (oneDNN on CPU, channels-last)
with float32 master weights, so training works too (gradients reach the float32 parameters);
block 1 is the exact sparse float32 kernel in both modes. Precision is a runtime choice, never
part of a model file.

Whether bf16 pays depends on the hardware: with AMX tiles (Sapphire Rapids and later, when the
hypervisor exposes them) or a CUDA device with bf16, oneDNN/cuDNN bf16 convolutions are several
times faster than float32; with AVX-512-BF16 alone (no AMX) oneDNN's bf16 conv3d measured 1.6×
*slower* than its float32 one on a 2-core VM (``benchmarks/bench_engine.py``). Hence ``"auto"``
picks bf16 only on AMX or CUDA, while an explicit ``"bf16"`` is honoured wherever bf16 runs
natively and falls back to fp32 with a warning elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

PRECISIONS = ("fp32", "bf16")
REQUESTS = ("auto", *PRECISIONS)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_support(device: str | torch.device = "cpu") -> str | None:
    """How ``device`` runs bfloat16 natively: ``"cuda"``, ``"amx"`` (AMX-BF16 tiles),
    ``"avx512_bf16"`` (AVX-512-BF16 instructions only), or None (emulated or unsupported)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "cuda" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if dev.type != "cpu":
        return None
    flags = _cpu_flags()
    if "amx_bf16" in flags and "amx_tile" in flags:
        return "amx"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = "avx512_bf16" in flags
    return "avx512_bf16" if native else None


def resolve_precision(requested: str = "auto", device: str | torch.device = "cpu") -> str:
    """``"fp32"`` or ``"bf16"`` for a requested ``"auto"``, ``"fp32"`` or ``"bf16"`` on ``device``.

    ``auto`` gives bf16 only where it is faster (AMX or CUDA). ``bf16`` gives bf16 wherever it
    runs natively (also AVX-512-BF16 without AMX) and otherwise warns and gives fp32.
    """
    if requested not in REQUESTS:
        raise ValueError(f"precision must be one of {REQUESTS}, not {requested!r}")
    if requested == "fp32":
        return "fp32"
    support = bf16_support(device)
    if requested == "auto":
        return "bf16" if support in ("amx", "cuda") else "fp32"
    if support is None:
        warnings.warn(f"bf16 is not supported natively on {torch.device(device)}; using fp32", RuntimeWarning,
                      stacklevel=2)
        return "fp32"
    return "bf16"


def autocast(precision: str, device_type: str = "cpu"):
    """The autocast context of ``precision``: bf16 autocast, or for fp32 no context at all — so an
    enclosing autocast (e.g. Lightning's ``precision="bf16-mixed"``) still applies inside."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)
