"""One comparison helper for notebooks and tests: print the largest difference, assert a tolerance.

Every tolerance in the course is visible in the output (Karpathy's `cmp` pattern), e.g.

    ddpm_step vs DDPMScheduler  max|diff|=2.4e-07  tol=1e-05  ok
"""

from __future__ import annotations

from typing import Any

import torch


def max_abs_diff(ours: Any, ref: Any) -> float:
    """max |ours - ref| over all elements, as a Python float (tensors, arrays or numbers)."""
    a = torch.as_tensor(ours, dtype=torch.float64)
    b = torch.as_tensor(ref, dtype=torch.float64)
    if a.shape != b.shape and a.numel() != 1 and b.numel() != 1:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().max().item()


def report(name: str, ours: Any, ref: Any, atol: float = 1e-5) -> None:
    """Print `name  max|diff|=...  tol=...` and raise AssertionError when the difference > atol.
    Returns nothing, so a check at the end of a notebook cell echoes no stray value."""
    diff = max_abs_diff(ours, ref)
    ok = diff <= atol
    print(f"{name:<32} max|diff|={diff:.1e}  tol={atol:.0e}  {'ok' if ok else 'FAIL'}")
    if not ok:
        raise AssertionError(f"{name}: max|diff| = {diff:.3g} > tolerance {atol:.0e}")


def exercise(name: str, answer: Any, expected: Any, atol: float = 0.0) -> None:
    """Tell a learner whether an exercise answer is right: prints the verdict, never raises and
    returns nothing (no stray True/False under the cell)."""
    try:
        right = max_abs_diff(answer, expected) <= atol
    except (TypeError, ValueError, RuntimeError):
        right = answer == expected
    print(f"{name}: {'correct!' if right else 'not yet - try again (see the hint above)'}")
