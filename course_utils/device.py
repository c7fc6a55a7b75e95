"""Pick a device and dtype, seed every random number generator, read the run's switches.

The notebooks never call `.cuda()`: they ask `get_device()` once and pass the result on, so the
same cells run on a CUDA GPU (Stable Diffusion 1.5 in fp16), on Apple's MPS, and on a CPU
(the embedded mini-sd in fp32).

The environment switches of the course are read here and nowhere else:

    COURSE_DEVICE  cuda | mps | cpu              get_device()
    COURSE_DTYPE   float32 | float16 | bfloat16  default_dtype()
    COURSE_QUICK   1: fewer steps and samples    budget()  (CI's extra runs; no cell is skipped)

(`COURSE_MODEL` picks the model; it is read by `course_utils.models.resolve_name`.)
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_KNOWN = ("cuda", "mps", "cpu")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    """The dtype to load the model in: `COURSE_DTYPE` when set, else float16 on CUDA (what
    SD 1.5 is run in) and float32 everywhere else (float16 kernels on a CPU are slow).

    `COURSE_DTYPE=bfloat16` (or float16) on a CPU runs the course in half precision: every
    tensor a cell makes must then follow the model's dtype, as on a CUDA GPU in fp16.
    """
    name = os.environ.get("COURSE_DTYPE")
    if name:
        if name not in DTYPES:
            raise ValueError(
                f"COURSE_DTYPE={name!r} is not a dtype the course runs in: "
                f"use one of {', '.join(DTYPES)} (or unset it for the device's default)"
            )
        return DTYPES[name]
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def budget(full: int, quick: int) -> int:
    """`full`, or `quick` when `COURSE_QUICK=1`: the number of steps, samples or iterations.

    CI executes every notebook three times (mini-sd fp32, mini-sd in half precision, a random
    pipeline with SD 1.5's classes); the two extra runs set `COURSE_QUICK=1` to draw fewer
    samples with fewer steps. Cells are never skipped, only made smaller.
    """
    if not (isinstance(full, int) and isinstance(quick, int) and 0 < quick <= full):
        raise ValueError(
            f"budget(full, quick) needs integers with 0 < quick <= full, got {full}, {quick}"
        )
    flag = os.environ.get("COURSE_QUICK", "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"COURSE_QUICK={flag!r}: use 1 (quick) or 0 / unset (full)")
    return quick if flag == "1" else full


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
