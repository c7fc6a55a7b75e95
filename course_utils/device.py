"""Pick a device and dtype, and seed every random number generator.

The notebooks never call `.cuda()`: they ask `get_device()` once and pass the result on, so the
same cells run on a CUDA GPU (Stable Diffusion 1.5 in fp16), on Apple's MPS, and on a CPU
(the embedded mini-sd in fp32).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_KNOWN = ("cuda", "mps", "cpu")


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    return kind == "cpu"


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to compute on: `prefer` if given and present, else cuda -> mps -> cpu.

    `prefer` may be "cuda", "cuda:1", "mps", "cpu" or a `torch.device`. The environment variable
    `COURSE_DEVICE` plays the role of `prefer` when the argument is None. Asking for a device
    that is not there raises a `RuntimeError` that says so (never a silent fall-back to the CPU).
    """
    prefer = prefer if prefer is not None else os.environ.get("COURSE_DEVICE") or None
    if prefer is None:
        return torch.device(next(k for k in _KNOWN if _available(k)))
    try:
        dev = torch.device(prefer)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {prefer!r}: use one of {', '.join(_KNOWN)}") from e
    if dev.type not in _KNOWN:
        raise ValueError(f"unsupported device {prefer!r}: use one of {', '.join(_KNOWN)}")
    if not _available(dev.type):
        raise RuntimeError(
            f"device {str(dev)!r} was asked for but is not available on this machine "
            f"(torch {torch.__version__}, cuda available: {torch.cuda.is_available()}). "
            "Use get_device() with no argument to pick what is there, or install a CUDA build "
            "of torch on a machine with an NVIDIA GPU."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"{dev} asked for, but only {torch.cuda.device_count()} GPU(s) present")
    return dev


def default_dtype(device: str | torch.device) -> torch.dtype:
    """float16 on CUDA (what SD 1.5 is run in), float32 everywhere else (CPU fp16 is slow/lossy)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a seeded CPU generator.

    Notebooks prefer the explicit generator that this returns: drawing the initial noise on the
    CPU gives the same picture whatever device the model runs on.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator("cpu").manual_seed(seed)
