"""course_utils.flow: the DDPM schedule as a flow schedule, against closed forms and numerics."""

import pytest
import torch

from course_utils import ddpm, flow


@pytest.fixture(scope="module")
def sch():
    return flow.DiffusionScheduler(ddpm.alphas_cumprod(ddpm.scaled_linear_betas()))


T_GRID = torch.linspace(0, 1, 1001)


def test_alpha_squared_plus_beta_squared_is_one(sch):
    assert torch.allclose(
        sch.alpha(T_GRID) ** 2 + sch.beta(T_GRID) ** 2, torch.ones(1001), atol=1e-6
    )


def test_signal_grows_toward_data(sch):
    assert (sch.alpha(T_GRID).diff() >= 0).all() and (sch.beta(T_GRID).diff() <= 0).all()
    assert (sch.alpha_dot(T_GRID) > 0).all() and (sch.beta_dot(T_GRID) < 0).all()


def test_model_input_convention(sch):
    assert sch.model_input(torch.tensor(0.0)).item() == 999  # noise end
    assert sch.model_input(torch.tensor(1.0)).item() == 0  # data end
    assert sch.model_input(torch.tensor(0.5)).item() == round(0.5 * 999)
    assert sch.model_input(torch.tensor([0.0, 1.0])).dtype == torch.long


def test_ends_are_finite_with_the_right_sign(sch):
    ends = torch.tensor([0.0, 1.0])
    for f in (sch.alpha, sch.beta, sch.alpha_dot, sch.beta_dot):
        assert torch.isfinite(f(ends)).all()
    assert (sch.alpha(ends) > 0).all() and (sch.beta(ends) > 0).all()
    assert sch.alpha(torch.tensor(1.0)).item() == pytest.approx((1 - 0.00085) ** 0.5, rel=1e-5)


def test_derivatives_match_numeric_derivative_of_the_interpolated_schedule(sch):
    """Away from the ends, alpha_dot/beta_dot equal the slope of the piecewise-linear
    interpolation of alpha_bar between grid points, pushed through the square roots."""
    K = sch.K
    ab = sch.alphas_cumprod.double()
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        k = round((1 - t) * K)
        # central difference of alpha_bar(t) with h = 1/K: (ab[k-1] - ab[k+1]) / (2/K)
        g_dot = (ab[k - 1] - ab[k + 1]) * K / 2
        a, b = ab[k].sqrt(), (1 - ab[k]).sqrt()
        assert sch.alpha_dot(t).item() == pytest.approx((g_dot / (2 * a)).item(), rel=0.02)
        assert sch.beta_dot(t).item() == pytest.approx((-g_dot / (2 * b)).item(), rel=0.02)


def test_ot_scheduler():
    ot = flow.OptimalTransportScheduler()
    t = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(ot.alpha(t), t) and torch.equal(ot.beta(t), 1 - t)
    assert torch.equal(ot.alpha_dot(t), torch.ones(3)) and torch.equal(
        ot.beta_dot(t), -torch.ones(3)
    )


def test_epsilon_to_velocity_on_a_gaussian(sch):
    """Data x_1 = m (a point): then the true eps at x_t is (x_t - alpha m)/beta and the velocity
    is alpha_dot m + beta_dot eps, by differentiating x_t = alpha m + beta eps."""
    m = torch.tensor([[2.0, -1.0, 0.5]])
    eps = torch.randn(1, 3)
    for scheduler in (sch, flow.OptimalTransportScheduler()):
        for t in (0.05, 0.5, 0.95):
            a, b = scheduler.alpha(t), scheduler.beta(t)
            xt = a * m + b * eps
            u = flow.epsilon_to_velocity(xt, eps, torch.tensor(t), scheduler)
            expected = scheduler.alpha_dot(t) * m + scheduler.beta_dot(t) * eps
            assert torch.allclose(u, expected, atol=1e-4)


def test_euler_on_ot_flow_transports_exactly():
    """For the OT schedule and a point mass at m the velocity m - z is constant along the path
    x_t = t m + (1 - t) z, so 4 Euler steps land exactly on x(t_end)."""
    m, ot, z = torch.tensor([3.0, -2.0]), flow.OptimalTransportScheduler(), torch.tensor([0.3, 1.1])

    def velocity(x, t):
        eps = (x - ot.alpha(t) * m) / ot.beta(t)  # the exact eps-prediction for a point mass
        return flow.epsilon_to_velocity(x, eps, t, ot)

    x1, traj = flow.euler_sample(velocity, 0.01 * m + 0.99 * z, steps=4, t_start=0.01, t_end=0.999)
    assert len(traj) == 5 and torch.allclose(x1, 0.999 * m + 0.001 * z, atol=1e-4)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_t_is_a_clear_error(sch, bad):
    expected = "t contains NaN" if bad != bad else r"flow time t must be in \[0, 1\] .*got min"
    with pytest.raises(ValueError, match=expected):
        sch.alpha(torch.tensor([0.5, bad]))


def test_bad_schedule_and_steps(sch):
    with pytest.raises(ValueError, match="decreasing"):
        flow.DiffusionScheduler(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        flow.euler_sample(lambda x, t: x, torch.zeros(1), steps=0)
