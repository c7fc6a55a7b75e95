"""Pick a device and dtype, seed every random number generator, read the run's switches.

The notebooks never call `.cuda()`: they ask `get_device()` once and pass the result on, so the
same cells run on a CUDA GPU (Stable Diffusion 1.5 in fp16), on Apple's MPS, and on a CPU
(the embedded mini-sd in fp32).

The environment switches of the course are read here and nowhere else:

    COURSE_DEVICE  cuda | mps | cpu | cuda-sim   get_device()
    COURSE_DTYPE   float32 | float16 | bfloat16  default_dtype()
    COURSE_QUICK   1: fewer steps and samples    budget()  (CI's extra runs; no cell is skipped)

(`COURSE_MODEL` picks the model; it is read by `course_utils.models.resolve_name`.)

`COURSE_DEVICE=cuda-sim` computes on the CPU but keeps CUDA's one rule about placement: a tensor
put on the course's device and a tensor left on the CPU may not meet in one operation
(`SimulatedCuda`). CI runs every notebook so, and a missing `.to(device)` fails there first.
"""

from __future__ import annotations

import contextlib
import os
import random
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

_KNOWN = ("cuda", "mps", "cpu")
SIMULATED = "cuda-sim"
#: what `get_device()` returns under COURSE_DEVICE=cuda-sim: the CPU, under an index that no
#: other code uses, so that `SimulatedCuda` can tell "put on the course's device" from "left on
#: the CPU" (torch computes on "cpu:1" exactly as on "cpu").
SIMULATED_CUDA = torch.device("cpu", 1)
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
    if prefer == SIMULATED or (isinstance(prefer, torch.device) and prefer == SIMULATED_CUDA):
        return simulate_cuda()
    if prefer is None:
        return torch.device(next(k for k in _KNOWN if _available(k)))
    try:
        dev = torch.device(prefer)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"unknown device {prefer!r}: use one of {', '.join(_KNOWN)} or {SIMULATED}"
        ) from e
    if dev.type not in _KNOWN:
        raise ValueError(
            f"unsupported device {prefer!r}: use one of {', '.join(_KNOWN)} or {SIMULATED}"
        )
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
    cuda = torch.device(device).type == "cuda" or torch.device(device) == SIMULATED_CUDA
    return torch.float16 if cuda else torch.float32


def budget(full: int, quick: int) -> int:
    """`full`, or `quick` when `COURSE_QUICK=1`: the number of steps, samples or iterations.

    CI executes every notebook twice (mini-sd in float32 under nbval; a random pipeline with
    SD 1.5's classes in float16 under simulated CUDA); the second run sets `COURSE_QUICK=1` to
    draw fewer samples with fewer steps. Cells are never skipped, only made smaller.
    """
    if not (isinstance(full, int) and isinstance(quick, int) and 0 < quick <= full):
        raise ValueError(
            f"budget(full, quick) needs integers with 0 < quick <= full, got {full}, {quick}"
        )
    flag = os.environ.get("COURSE_QUICK", "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"COURSE_QUICK={flag!r}: use 1 (quick) or 0 / unset (full)")
    return quick if flag == "1" else full


def free_memory() -> None:
    """After `del` of the last name of a model: collect it now (a pipeline's modules refer to
    each other, so only the cycle collector frees them) and, on CUDA, hand the cached blocks back
    to the driver. SD 1.5 in fp16 holds ~2 GiB of weights a pipeline: a notebook that keeps
    every copy it made runs out of a 16 GB GPU (course_utils.meter counts the live ones)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


# --- simulated CUDA placement ----------------------------------------------------------------
_MARK = "_course_placed"  # True: on the (simulated) GPU; False: on the CPU; absent: not known
_DESCRIPTOR = types.GetSetDescriptorType
_FREE = {  # never a placement error: moves, copies and metadata
    torch.Tensor.copy_,
    torch.Tensor.size,
    torch.Tensor.dim,
    torch.Tensor.numel,
    torch.Tensor.is_floating_point,
    torch.Tensor.is_complex,
    torch.Tensor.element_size,
    torch.Tensor.data_ptr,
    torch.Tensor.untyped_storage,
    torch.Tensor.__len__,
    torch.Tensor.__repr__,
    torch.Tensor.__format__,
    torch.Tensor.__hash__,
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch._has_compatible_shallow_copy_type,  # Module.to's check before `param.data = moved`
}


def _placed(t: Any) -> bool | None:
    return getattr(t, _MARK, None) if isinstance(t, torch.Tensor) else None


def _mark(result: Any, on_gpu: bool | None) -> Any:
    if on_gpu is None:
        return result
    for r in result if isinstance(result, (list, tuple)) else (result,):
        if isinstance(r, torch.Tensor):
            setattr(r, _MARK, on_gpu)
    return result


def _device_error(where: str) -> RuntimeError:
    return RuntimeError(
        "Expected all tensors to be on the same device, but found at least two devices, cuda:0 "
        f"and cpu! ({where}; simulated by COURSE_DEVICE=cuda-sim: on a GPU this raises too. "
        "Put the CPU tensor on the model's device: `.to(device)` or `device=device` when you "
        "make it.)"
    )


def _is_sim(device: Any) -> bool:
    if isinstance(device, str):
        device = torch.device(device)
    return isinstance(device, torch.device) and device == SIMULATED_CUDA


class SimulatedCuda(TorchFunctionMode):
    """CUDA's placement rule on a CPU: computing stays on the CPU, but every tensor remembers
    whether it was put on the course's device (`SIMULATED_CUDA`), and an operation that mixes
    such a tensor with one left on the CPU raises the RuntimeError CUDA raises.

    What is placed: the result of `.to(device)` / `device=device` (so a model's parameters after
    `pipe.to(device)`), and every result computed from a placed tensor. What is on the CPU: a
    tensor made without `device=` or moved by `.cpu()`. Tensors that torch makes in C++ (the
    gradients of `backward()`) carry no mark and meet either side, so the simulation can miss an
    error but never invents one. As on CUDA, a CPU tensor of 0 dimensions (a scalar) and a CPU
    index into a GPU tensor are allowed; `.numpy()` of a placed tensor raises as on CUDA.
    A placed tensor answers `.device` with `SIMULATED_CUDA`, so `device=x.device` places too.
    """

    def __torch_function__(self, func, types_, args=(), kwargs=None):  # noqa: D105, ANN001
        kwargs = kwargs or {}
        if func in _FREE:
            return func(*args, **kwargs)
        owner = getattr(func, "__self__", None)
        if isinstance(owner, _DESCRIPTOR):  # a property of a tensor: .device, .grad, .data
            return self._attribute(owner.__name__, func, args)
        if func is torch.Tensor.to or func is torch.Tensor.cpu:
            return self._move(func, args, kwargs)
        if func is torch.Tensor.numpy or func is torch.Tensor.__array__:
            if _placed(args[0]):
                raise TypeError(
                    "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                    "the tensor to host memory first. (simulated by COURSE_DEVICE=cuda-sim)"
                )
            return func(*args, **kwargs)
        if func is torch.Tensor.__getitem__ or func is torch.Tensor.__setitem__:
            return self._index(func, args, kwargs)
        return self._compute(func, args, kwargs)

    @staticmethod
    def _attribute(name: str, func: Any, args: tuple) -> Any:
        if name == "data" and func.__name__ == "__set__":  # param.data = moved (Module.to)
            func(*args)
            placed = _placed(args[1])
            if placed is not None:
                setattr(args[0], _MARK, placed)
            return None
        result = func(*args)
        placed = _placed(args[0])
        if name == "device" and placed:
            return SIMULATED_CUDA
        if name in ("grad", "data", "T", "mT", "H", "real", "imag") and placed is not None:
            _mark(result, placed)
        return result

    @staticmethod
    def _move(func: Any, args: tuple, kwargs: dict) -> Any:
        src = args[0]
        if func is torch.Tensor.cpu:
            target = False
        elif len(args) > 1 and isinstance(args[1], torch.Tensor):  # x.to(other)
            target = _placed(args[1])
        else:
            where = {k: v for k, v in kwargs.items() if k != "copy"}  # _parse_to takes no copy=
            device = torch._C._nn._parse_to(*args[1:], **where)[0]
            target = _placed(src) if device is None else _is_sim(device)
        result = func(*args, **kwargs)
        if result is src and target is not None and target != _placed(src):
            result = src.view_as(src)  # a new tensor object: the source stays where it was
        return _mark(result, target)

    @staticmethod
    def _index(func: Any, args: tuple, kwargs: dict) -> Any:
        src, index = args[0], args[1]
        indices = index if isinstance(index, (tuple, list)) else (index,)
        if not _placed(src) and any(_placed(i) and i.dim() > 0 for i in indices):
            raise RuntimeError(
                "indices should be either on cpu or on the same device as the indexed tensor "
                "(cpu) (simulated by COURSE_DEVICE=cuda-sim)"
            )
        return _mark(func(*args, **kwargs), _placed(src))

    @staticmethod
    def _compute(func: Any, args: tuple, kwargs: dict) -> Any:
        # one pass over the tensors among the arguments, one level into lists and tuples
        # (torch.cat's); this runs for every torch call, so it stays lean
        gpu = cpu = cpu_big = seen = False
        for a in (*args, *kwargs.values()) if kwargs else args:
            for t in (
                (a,) if isinstance(a, torch.Tensor) else a if isinstance(a, (list, tuple)) else ()
            ):
                if not isinstance(t, torch.Tensor):
                    continue
                seen = True
                m = getattr(t, _MARK, None)
                if m:
                    gpu = True
                elif m is False:
                    cpu = True
                    cpu_big = cpu_big or t.dim() > 0
        if gpu and cpu_big:
            raise _device_error(f"in {getattr(func, '__name__', func)}")
        device = kwargs.get("device") if kwargs else None
        if device is not None:
            placed = _is_sim(device)
        elif gpu:
            placed = True
        elif cpu or not seen:
            placed = False  # computed from CPU tensors, or made on the CPU (torch.zeros(...))
        else:
            placed = None  # only tensors of unknown place in: unknown out
        return _mark(func(*args, **kwargs), placed)


_GLOBAL_SIMULATION: SimulatedCuda | None = None


def simulate_cuda() -> torch.device:
    """Turn on `SimulatedCuda` for the rest of this process (COURSE_DEVICE=cuda-sim) and return
    `SIMULATED_CUDA`. A machine with a real GPU should use it: asking for both is an error."""
    global _GLOBAL_SIMULATION
    if torch.cuda.is_available():
        raise RuntimeError(
            f"COURSE_DEVICE={SIMULATED} simulates CUDA's placement rule on a CPU, but this "
            "machine has a real CUDA GPU: use COURSE_DEVICE=cuda (or unset it)"
        )
    if _GLOBAL_SIMULATION is None:
        _GLOBAL_SIMULATION = SimulatedCuda()
        _GLOBAL_SIMULATION.__enter__()  # stays on: every later cell computes under it
    return SIMULATED_CUDA


@contextlib.contextmanager
def simulation_paused() -> Iterator[None]:
    """Loading code (diffusers' `from_pretrained`, with its own meta-device context) runs with the
    simulation off; the model is then moved with `.to(device)` under it, as on a GPU."""
    sim = _GLOBAL_SIMULATION
    if sim is None:
        yield
        return
    sim.__exit__(None, None, None)
    try:
        yield
    finally:
        sim.__enter__()
