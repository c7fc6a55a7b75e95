"""The DDPM maths (Ho, Jain & Abbeel 2020, https://arxiv.org/abs/2006.11239), as SD 1.5 uses it.

Notation (one ASCII name per symbol):  beta_t -> betas[t],  alpha_t = 1 - beta_t,
alpha_bar_t = prod_{s<=t} alpha_s -> alphas_cumprod[t] (diffusers' name), eps -> noise,
eps_pred = eps_theta(x_t, t), x0_pred = x^_0. Time runs t = 0 (almost clean) ... T-1 (noise).
Taught in notebooks/04_ddpm_maths.ipynb; every function equals the diffusers line it mirrors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def scaled_linear_betas(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000
) -> torch.Tensor:
    """SD's "scaled_linear" schedule: sqrt(beta_t) linear in t, i.e.
    beta_t = (sqrt(beta_start) + t/(T-1) (sqrt(beta_end) - sqrt(beta_start)))^2.  Shape (T,)."""
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    return (
        torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32)
        ** 2
    )


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s=0..t} (1 - beta_s)  (Ho et al., below Eq. 4).  Shape (T,)."""
    return torch.cumprod(1.0 - betas, dim=0)


def _at(
    values: torch.Tensor, t: int | torch.Tensor, x: torch.Tensor, cast: bool = True
) -> torch.Tensor:
    """values[t] shaped to broadcast against x: t is an int or a (B,) tensor of ints. `cast`
    converts to x's dtype first (as diffusers' add_noise does); without it the schedule stays in
    its own float32 (as diffusers' step does: in fp16, 1 - alpha_bar_t near t = 0 would round)."""
    t = torch.as_tensor(t, device=values.device)
    if t.is_floating_point():
        raise TypeError("t must hold integer timesteps (0 .. T-1), got floats")
    if (t < 0).any() or (t >= len(values)).any():
        raise ValueError(f"timesteps must be in [0, {len(values) - 1}], got {t.tolist()}")
    v = (values.to(x.dtype) if cast else values)[t].flatten().to(x.device)
    return v.reshape(-1, *([1] * (x.ndim - 1))) if v.numel() > 1 else v.reshape(())


def add_noise(
    x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Sample q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)  (Ho et al. Eq. 4):
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.  = DDPMScheduler.add_noise.
    x0, noise: (B, ...); t: int or (B,) long."""
    if x0.shape != noise.shape:
        raise ValueError(
            f"x0 and noise must have the same shape, got {tuple(x0.shape)} and {tuple(noise.shape)}"
        )
    ab = _at(alphas_cumprod, t, x0)
    return ab**0.5 * x0 + (1 - ab) ** 0.5 * noise


class Posterior(NamedTuple):
    """The Gaussian q(x_{t-1} | x_t, x_0): its mean and its variance (Ho et al. Eq. 7)."""

    mean: torch.Tensor  # mu~_t(x_t, x_0)
    variance: torch.Tensor  # beta~_t


def posterior(
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: int | torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prev_t: int | None = None,
) -> Posterior:
    """q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)  (Ho et al. Eqs. 6-7), with alpha_bar_{-1} := 1:
    mu~_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
            + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t,  beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}.
    `prev_t` (an int) replaces t - 1 when a sampler with fewer steps jumps from t to prev_t: the
    same formulas with alpha_bar_{prev_t} in place of alpha_bar_{t-1}."""
    if prev_t is None:
        ab_prev_all = torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod[:-1]])
        ab_prev = _at(ab_prev_all, t, xt, cast=False)
    else:
        one = torch.ones((), dtype=alphas_cumprod.dtype, device=xt.device)
        ab_prev = _at(alphas_cumprod, prev_t, xt, cast=False) if prev_t >= 0 else one
    ab = _at(alphas_cumprod, t, xt, cast=False)  # coefficients in float32, as diffusers' step
    alpha = ab / ab_prev
    beta = 1 - alpha
    mean = ab_prev**0.5 * beta / (1 - ab) * x0 + alpha**0.5 * (1 - ab_prev) / (1 - ab) * xt
    variance = (1 - ab_prev) / (1 - ab) * beta
    return Posterior(mean.to(xt.dtype), variance)


class StepOut(NamedTuple):
    """One reverse step's result, with diffusers' names as aliases (prev_sample, ...)."""

    prev: torch.Tensor  # x_{t-1}
    x0_pred: torch.Tensor  # x^_0, useful for previews and rewards

    @property
    def prev_sample(self) -> torch.Tensor:
        """x_{t-1} under diffusers' name."""
        return self.prev

    @property
    def pred_original_sample(self) -> torch.Tensor:
        """x^_0 under diffusers' name."""
        return self.x0_pred


def ddpm_step(
    eps: torch.Tensor,
    t: int,
    xt: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
    prev_t: int | None = None,
    clip_sample: float | None = None,
) -> StepOut:
    """One reverse step, Ho et al. Algorithm 2 written through x^_0 (= DDPMScheduler.step with
    variance_type "fixed_small", i.e. sigma_t^2 = beta~_t):
        1. x^_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)        (Eq. 15)
           (clamped to [-clip_sample, clip_sample] if given; SD does not clamp)
        2. x_{t-1} = mu~_t(x_t, x^_0) + sigma_t z,  z ~ N(0, I), no noise at t = 0   (Eq. 7)
    `prev_t` defaults to t - 1 (all 1000 steps); a scheduler with fewer steps jumps further.
    z is drawn with `generator` in eps's dtype on eps's device (give a generator on that device;
    diffusers draws on the generator's device and moves the noise)."""
    ab = _at(alphas_cumprod, t, xt, cast=False)
    x0_pred = (xt - (1 - ab) ** 0.5 * eps) / ab**0.5  # 1. Eq. 15
    if clip_sample is not None:
        x0_pred = x0_pred.clamp(-clip_sample, clip_sample)
    prev_t = t - 1 if prev_t is None else prev_t
    mean, variance = posterior(x0_pred, xt, t, alphas_cumprod, prev_t)  # 2. Eq. 7
    if t > 0:
        z = torch.randn(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
        mean = mean + torch.clamp(variance, min=1e-20) ** 0.5 * z
    return StepOut(mean, x0_pred)


def training_loss(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ho et al. Algorithm 1, one step: t ~ Uniform{0..T-1}, eps ~ N(0, I),
    loss = || eps - eps_model(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2  (Eq. 14).
    `eps_model(x_t, t)` takes (B, ...) and (B,) long; returns the loss averaged over the batch."""
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)  # x0's device and dtype
    return F.mse_loss(eps_model(add_noise(x0, noise, t, alphas_cumprod), t), noise)
