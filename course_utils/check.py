"""One comparison helper for notebooks and tests: print the largest difference, assert a tolerance.

Every tolerance in the course is visible in the output (Karpathy's `cmp` pattern), e.g.

    ddpm_step vs DDPMScheduler  max|diff|=2.4e-07  tol=2e-05 (100 ulp of float32 at |ref| 1.7)  ok

Two implementations of one formula (ours and diffusers') may order their floating-point operations
differently, and two machines may run one implementation on different kernels (AVX-512, AVX2,
the plain C path: `ATEN_CPU_CAPABILITY`), so their results agree to the dtype's rounding, not to
the bit. The default tolerance is therefore relative to the dtype and to the size of the numbers:

    tol = ulps * eps(dtype) * max(1, max|ref|)          eps(float32) = 1.2e-7

with ulps = 100 ("a hundred roundings' worth"). An explicit `atol` is for what is not rounding:
a closed form against a finite difference, a model's error, or 0 where the operations are the
same ones in the same order by construction. The printed difference is for the reader; nbval
compares the verdict, not the digits (`tests/nbval_sanitize.cfg`).
"""

from __future__ import annotations

from typing import Any

import torch

ULPS = 100.0


def max_abs_diff(ours: Any, ref: Any) -> float:
    """max |ours - ref| over all elements, as a Python float (tensors, arrays or numbers)."""
    a = torch.as_tensor(ours, dtype=torch.float64)
    b = torch.as_tensor(ref, dtype=torch.float64)
    if a.shape != b.shape and a.numel() != 1 and b.numel() != 1:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().max().item()


def coarsest_dtype(*values: Any) -> torch.dtype:
    """The floating dtype with the largest machine epsilon among `values` (float32 for numbers,
    NumPy arrays and integer tensors): the precision two results can be compared to."""
    dtypes = [v.dtype for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return max(dtypes or [torch.float32], key=lambda d: torch.finfo(d).eps)


def tolerance(ref: Any, dtype: torch.dtype | None = None, ulps: float = ULPS) -> float:
    """`ulps * eps(dtype) * max(1, max|ref|)`: the room that rounding needs when two
    implementations of one formula order their operations differently (Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2002, §3.1: each operation contributes a relative error
    of at most eps/2; errors of n operations add up to about n·eps in the worst case)."""
    if not ulps > 0:
        raise ValueError(f"ulps must be a positive number, got {ulps!r}")
    dtype = dtype or coarsest_dtype(ref)
    scale = torch.as_tensor(ref, dtype=torch.float64).abs().max().item()
    if scale != scale:  # NaN in the reference: no tolerance makes that a pass
        raise ValueError("the reference holds NaN: compare finite values")
    return ulps * torch.finfo(dtype).eps * max(1.0, scale)


def report(
    name: str,
    ours: Any,
    ref: Any,
    atol: float | None = None,
    *,
    ulps: float = ULPS,
    dtype: torch.dtype | None = None,
) -> None:
    """Print `name  max|diff|=...  tol=...` and raise AssertionError when the difference > tol.

    `atol=None` (the default) takes `tolerance(ref, dtype, ulps)`, with `dtype` the precision the
    two were computed in (default: the coarser dtype of the two); a number is an absolute
    tolerance. Returns nothing, so a check at the end of a notebook cell echoes no stray value."""
    diff = max_abs_diff(ours, ref)
    if atol is None:
        dtype = dtype or coarsest_dtype(ours, ref)
        tol = tolerance(ref, dtype, ulps)
        scale = tol / (ulps * torch.finfo(dtype).eps)  # max(1, max|ref|), read back from tol
        why = f" ({ulps:g} ulp of {str(dtype).removeprefix('torch.')} at |ref| {scale:.2g})"
    else:
        tol, why = atol, ""
    ok = diff <= tol
    print(f"{name:<32} max|diff|={diff:.1e}  tol={tol:.0e}{why}  {'ok' if ok else 'FAIL'}")
    if not ok:
        raise AssertionError(f"{name}: max|diff| = {diff:.3g} > tolerance {tol:.1g}")


def exercise(name: str, answer: Any, expected: Any, atol: float = 0.0) -> None:
    """Tell a learner whether an exercise answer is right: prints the verdict, never raises and
    returns nothing (no stray True/False under the cell)."""
    try:
        right = max_abs_diff(answer, expected) <= atol
    except (TypeError, ValueError, RuntimeError):
        right = answer == expected
    print(f"{name}: {'correct!' if right else 'not yet - try again (see the hint above)'}")
