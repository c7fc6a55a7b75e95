"""The DDPM schedule read as a flow-matching schedule (taught in 05_scheduler_conversion).

Flow-matching convention (Lipman et al. 2023, "Flow Matching for Generative Modeling",
Sec. 4; Liu et al. 2022, "Rectified Flow", Eq. 1): t in [0, 1], t = 0 is x_noise ~ N(0, I), t = 1 is x_data, and
    x_t = alpha_t x_data + beta_t x_noise,     velocity  u_t = alpha_dot_t x_data + beta_dot_t x_noise.
(In DDPM notation, notebook 04, x_noise is eps and x_data is x0: we never write x0/x1 here.)
A DDPM with cumulative products alpha_bar_k (k = 0 .. K, K = T - 1; k = K is the noisiest) is
such a schedule with alpha_t = sqrt(alpha_bar_k), beta_t = sqrt(1 - alpha_bar_k) at the discrete
index k(t) = clamp(round((1 - t) K), 0, K). With gamma_k := alpha_bar_k and the backward
difference in k (alpha_bar_{-1} := 1, so t = 1 has a finite slope):
    gamma_dot_k = K (alpha_bar_{k-1} - alpha_bar_k) > 0,
    alpha_dot = gamma_dot / (2 alpha),      beta_dot = -gamma_dot / (2 beta)
(d sqrt(g)/dt = g'/(2 sqrt g), d sqrt(1 - g)/dt = -g'/(2 sqrt(1 - g))). The naive
k = floor(T (1 - t)) is T at t = 0 (one past the end), and its neighbour k - 1 is -1 at t = 1,
which Python wraps to the *noisiest* entry; notebook 05 shows both failures.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TimeLike = float | torch.Tensor  # flow time t in [0, 1]: a number or a tensor of them


def check_t(t: TimeLike) -> torch.Tensor:
    """t as a float tensor; a clear error for NaN or values outside [0, 1]."""
    t = torch.as_tensor(t, dtype=torch.float32)
    if torch.isnan(t).any():
        raise ValueError("t contains NaN; flow time must be a number in [0, 1]")
    if (t < 0).any() or (t > 1).any():
        raise ValueError(
            f"flow time t must be in [0, 1] (0 = noise, 1 = data), got min {t.min().item():.4g}, max {t.max().item():.4g}"
        )
    return t


class DiffusionScheduler:
    """A discrete DDPM schedule (alphas_cumprod, shape (K+1,)) as a flow schedule on t in [0, 1].
    Every method is vectorised over a tensor of times t."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float32).flatten().cpu()
        if ab.numel() < 2 or not ((ab > 0) & (ab < 1)).all() or not (ab.diff() < 0).all():
            raise ValueError(
                "alphas_cumprod must be a decreasing sequence in (0, 1) of length >= 2"
            )
        self.alphas_cumprod = ab
        self.K = len(ab) - 1
        ab_prev = torch.cat([torch.ones(1), ab[:-1]])  # alpha_bar_{-1} := 1
        self.gamma_dot = self.K * (ab_prev - ab)  # d alpha_bar / dt at each k, > 0

    def model_input(self, t: TimeLike) -> torch.Tensor:
        """k(t) = clamp(round((1 - t) K), 0, K): the integer timestep the U-Net was trained on."""
        return torch.round((1 - check_t(t)) * self.K).long().clamp(0, self.K)

    def alpha(self, t: TimeLike) -> torch.Tensor:
        """alpha_t = sqrt(alpha_bar_{k(t)}): how much data is in x_t."""
        return self.alphas_cumprod[self.model_input(t)].sqrt()

    def beta(self, t: TimeLike) -> torch.Tensor:
        """beta_t = sqrt(1 - alpha_bar_{k(t)}): how much noise is in x_t."""
        return (1 - self.alphas_cumprod[self.model_input(t)]).sqrt()

    def alpha_dot(self, t: TimeLike) -> torch.Tensor:
        """d alpha / dt = gamma_dot / (2 alpha) > 0."""
        return self.gamma_dot[self.model_input(t)] / (2 * self.alpha(t))

    def beta_dot(self, t: TimeLike) -> torch.Tensor:
        """d beta / dt = -gamma_dot / (2 beta) < 0."""
        return -self.gamma_dot[self.model_input(t)] / (2 * self.beta(t))


class OptimalTransportScheduler:
    """The straight-line (rectified-flow / conditional-OT) schedule: alpha_t = t, beta_t = 1 - t."""

    def model_input(self, t: TimeLike) -> torch.Tensor:
        """The model's time input is t itself (a flow-matching model is trained on t)."""
        return check_t(t)

    def alpha(self, t: TimeLike) -> torch.Tensor:
        """alpha_t = t (Liu et al. 2022, Eq. 1; Lipman et al. 2023, Eq. 20 with sigma_min = 0)."""
        return check_t(t)

    def beta(self, t: TimeLike) -> torch.Tensor:
        """beta_t = 1 - t."""
        return 1 - check_t(t)

    def alpha_dot(self, t: TimeLike) -> torch.Tensor:
        """d alpha / dt = 1."""
        return torch.ones_like(check_t(t))

    def beta_dot(self, t: TimeLike) -> torch.Tensor:
        """d beta / dt = -1."""
        return -torch.ones_like(check_t(t))


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    v = v.to(device=x.device, dtype=x.dtype)
    return v.reshape(-1, *([1] * (x.ndim - 1))) if v.ndim == 1 else v


def epsilon_to_velocity(
    x: torch.Tensor,
    eps: torch.Tensor,
    t: TimeLike,
    scheduler: DiffusionScheduler | OptimalTransportScheduler,
) -> torch.Tensor:
    """Turn an epsilon-prediction into the flow's velocity at (x, t) (notebook 05, section 5.3):
        x^_data = (x - beta_t eps) / alpha_t,        u = alpha_dot_t x^_data + beta_dot_t eps.
    (x_t = alpha_t x_data + beta_t x_noise with x_noise = eps; differentiate in t.)
    t: scalar or (B,)."""
    a, b = _bcast(scheduler.alpha(t), x), _bcast(scheduler.beta(t), x)
    ad, bd = _bcast(scheduler.alpha_dot(t), x), _bcast(scheduler.beta_dot(t), x)
    x_data_pred = (x - b * eps) / a
    return ad * x_data_pred + bd * eps


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_noise: torch.Tensor,
    steps: int,
    t_start: float = 0.0,
    t_end: float = 1.0,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Integrate dx/dt = velocity(x, t) from t_start (noise) to t_end (data) with `steps` Euler
    steps on a uniform grid: x_{n+1} = x_n + (t_{n+1} - t_n) velocity(x_n, t_n).
    `x_noise` is the start at t_start. Returns the final x (the data end) and the trajectory
    [x at t_start, ..., x at t_end]."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    ts = torch.linspace(*check_t([t_start, t_end]).tolist(), steps + 1)
    x, traj = x_noise, [x_noise]
    for n in range(steps):
        x = x + (ts[n + 1] - ts[n]).item() * velocity(x, ts[n])
        traj.append(x)
        if callback is not None:
            callback(n, ts[n + 1], x)
    return x, traj
