"""check.report's default tolerance: relative to the dtype and the numbers' size, wide enough for
two orderings of one computation, narrow enough to catch a real difference."""

import pytest
import torch

from course_utils import check


def test_tolerance_is_ulps_times_eps_times_the_scale():
    ref = torch.tensor([0.5, -3.0])
    assert check.tolerance(ref) == pytest.approx(100 * 2**-23 * 3.0)
    assert check.tolerance(torch.tensor([0.01])) == pytest.approx(100 * 2**-23)  # floor of 1
    assert check.tolerance(ref.half()) == pytest.approx(100 * 2**-10 * 3.0)
    assert check.tolerance(ref, torch.bfloat16, ulps=8) == pytest.approx(8 * 2**-7 * 3.0)


def test_the_coarser_dtype_sets_the_tolerance():
    assert check.coarsest_dtype(torch.ones(1), torch.ones(1).half()) == torch.float16
    assert check.coarsest_dtype(torch.ones(1, dtype=torch.float64), 1.0) == torch.float64
    assert check.coarsest_dtype(torch.arange(3), [1, 2]) == torch.float32


def test_two_summation_orders_pass_and_a_real_difference_fails(capsys):
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 100
    forward, backward = x.sum(), x.flip(0).sum()
    pairwise = x.view(100, 1000).sum(1).sum()
    assert forward != backward or forward != pairwise  # float32 rounding, measured
    check.report("sum, two orders", backward, forward)
    check.report("sum, pairwise", pairwise, forward)
    assert "ok" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="max\\|diff\\|"):
        check.report("sum, one number off", forward + 1, forward)


def test_report_says_why_its_bound_is_what_it_is(capsys):
    check.report("x", torch.ones(3), torch.ones(3))
    assert "100 ulp of float32 at |ref| 1" in capsys.readouterr().out
    check.report("exact", 1.0, 1.0, atol=0)
    assert "tol=0e+00  ok" in capsys.readouterr().out


def test_bad_references_and_ulps_are_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        check.report("nan", torch.zeros(2), torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="positive"):
        check.tolerance(torch.ones(2), ulps=0)
