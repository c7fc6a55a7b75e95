"""Samplers as solvers of the probability-flow ODE and the reverse SDE (taught in 09_samplers).

In the sigma view of 05 (Song et al. 2021, "VE"; Karras et al. 2022, "EDM", Sec. 2) the noised
latent is x = x_data + sigma * eps, with sigma = sqrt((1 - alpha_bar) / alpha_bar) and
x = z / sqrt(alpha_bar) for diffusers' latent z. The U-Net's eps_pred gives

    D(x; sigma)         = x - sigma * eps_pred(x / sqrt(sigma^2 + 1), timestep(sigma))   the denoiser
    grad log p_sigma(x) = (D(x; sigma) - x) / sigma^2 = -eps_pred / sigma                the score
    dx/dsigma           = (x - D(x; sigma)) / sigma       the probability-flow ODE (Karras Eq. 1 and 3)
    dx = 2 (x - D) / sigma dsigma + sqrt(2 sigma |dsigma|) n,  sigma decreasing, n ~ N(0, I)
                                                          the reverse SDE (Karras Eq. 6, beta = 1/sigma)

Every solver below is a loop over a decreasing schedule sigmas[0] > ... > sigmas[N] = 0, calling
`denoiser(x, sigma, timestep)` for D:

    euler            x <- x + (s' - s) d,  d = (x - D) / s                         N calls
    heun             Euler's x', then x <- x + (s' - s) (d + d') / 2  (Karras Alg. 1) 2N - 1 calls
    dpmpp_2m         x <- (s'/s) x + (1 - s'/s) D2,  D2 = D + (D - D_prev) / (2 r)  N calls
                     (Lu et al. 2022, "DPM-Solver++", Alg. 2, written in sigma)
    euler_ancestral  Euler to s_down, then fresh noise of std s_up                 N calls
                     (s_up^2 = s'^2 (s^2 - s'^2) / s^2, s_down^2 = s'^2 - s_up^2: Ho et al.'s
                     DDPM step with eta = 1, in Crowson's k-diffusion form)

`sample(pipe, prompt, method=...)` runs one on a pipeline and returns the final latents; it equals
`pipe(..., output_type="latent")` with the matching diffusers scheduler (tests/test_samplers.py:
max |diff| <= 1e-5 in fp32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from course_utils.sampling import (
    Guidance,
    as_prompt_list,
    check_generate_args,
    encode_prompt,
    guided_eps,
    initial_latents,
)

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]

SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
}
KARRAS = ("euler", "heun", "dpmpp_2m")  # the diffusers schedulers with use_karras_sigmas


# --- the step schedule -------------------------------------------------------------------------


def training_sigmas(alphas_cumprod: torch.Tensor | np.ndarray) -> np.ndarray:
    """sigma_k = sqrt((1 - alpha_bar_k) / alpha_bar_k) for k = 0 ... T - 1 (increasing in k)."""
    ab = np.asarray(alphas_cumprod, dtype=np.float32)
    return ((1 - ab) / ab) ** 0.5


def spaced_timesteps(
    steps: int,
    spacing: str,
    num_train_timesteps: int = 1000,
    steps_offset: int = 0,
    multistep: bool = False,
) -> np.ndarray:
    """Which training timesteps `steps` steps visit, decreasing (Lin et al. 2024, Table 2):
    leading k_i = i * (T // n) + offset, linspace k_i = i (T - 1) / (n - 1), trailing
    k_i = round(T - i T / steps) - 1. diffusers' multistep DPM-Solver spaces n = steps + 1 points
    and drops the smallest (leading and linspace, rounded); the others use n = steps."""
    T = num_train_timesteps
    n = steps + 1 if multistep and spacing != "trailing" else steps
    if spacing == "leading":
        ts = (np.arange(n) * (T // n)).round()[::-1] + steps_offset
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, n)[::-1]
        ts = ts.round() if multistep else ts
    elif spacing == "trailing":
        ts = np.arange(T, 0, -T / steps).round() - 1  # already decreasing
    else:
        raise ValueError(f"unknown timestep_spacing {spacing!r}: use leading, linspace or trailing")
    return ts[:steps].astype(np.float32)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0 ... N - 1 (Karras et al. 2022, Eq. 5): steps crowd where sigma is small."""
    ramp = np.linspace(0, 1, steps)
    return (
        sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    ) ** rho


def sigma_to_timestep(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """The fractional training timestep of each sigma: piecewise-linear in log sigma between the
    training sigmas, clamped to [0, T - 1] (what the U-Net is told for a sigma off the grid)."""
    log_train = np.log(train_sigmas)
    return np.interp(np.log(np.maximum(sigmas, 1e-10)), log_train, np.arange(len(log_train)))


class Schedule(NamedTuple):
    """What a sampler walks: sigmas (N + 1, the last 0), the U-Net's timestep at each of the
    first N, and the standard deviation of the starting noise."""

    sigmas: torch.Tensor  # float32, decreasing, sigmas[-1] = 0
    timesteps: torch.Tensor  # (N,), float32 (int64 for dpmpp_2m, as diffusers gives it)
    init_noise_sigma: float


def schedule(config: Any, method: str, steps: int, karras: bool = False) -> Schedule:
    """The sigmas and timesteps diffusers' scheduler for `method` visits, from a scheduler config
    (`pipe.scheduler.config`: its alphas, timestep_spacing and steps_offset).

    Plain: the spaced timesteps and sigma interpolated (linearly in k) at them. Karras: Eq. 5
    between the spaced ends (euler, heun) or the whole training range (dpmpp_2m), with
    timesteps from `sigma_to_timestep` (rounded for dpmpp_2m). The start x_T = sigma_max * n for
    linspace and trailing spacing (EDM's choice), sqrt(sigma_max^2 + 1) * n otherwise, the
    spread of x_data + sigma_max * eps for unit-variance data; DPM-Solver always takes the
    latter (it starts from z_T = n)."""
    check_method(method, steps, karras)
    from diffusers import DDPMScheduler

    alphas_cumprod = DDPMScheduler.from_config(config).alphas_cumprod
    train = training_sigmas(alphas_cumprod)
    spacing = config.get("timestep_spacing", "leading")
    multistep = method == "dpmpp_2m"
    ts = spaced_timesteps(
        steps, spacing, len(train), config.get("steps_offset", 0), multistep=multistep
    )
    sigmas = np.interp(ts, np.arange(len(train)), train)
    if karras:
        lo, hi = (train[0], train[-1]) if multistep else (sigmas[-1], sigmas[0])
        sigmas = karras_sigmas(float(lo), float(hi), steps)
        ts = sigma_to_timestep(sigmas, train)
        ts = ts.round() if multistep else ts
    sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
    timesteps = torch.from_numpy(np.asarray(ts)).to(torch.int64 if multistep else torch.float32)
    edm_start = spacing in ("linspace", "trailing") and not multistep
    s_max = sigmas.max()
    init = s_max if edm_start else (s_max**2 + 1) ** 0.5
    return Schedule(sigmas, timesteps, float(init))


def check_method(method: str, steps: int, karras: bool = False) -> None:
    """Clear errors for an unknown method, steps < 1, or Karras sigmas where diffusers has none."""
    if method not in SCHEDULERS:
        raise ValueError(f"unknown sampler {method!r}: use one of {', '.join(SCHEDULERS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if karras and method not in KARRAS:
        raise ValueError(
            f"{SCHEDULERS[method]} has no Karras sigmas in diffusers (use_karras_sigmas is not one "
            f"of its options): use karras_sigmas=False, or one of {', '.join(KARRAS)}"
        )


# --- the solvers -------------------------------------------------------------------------------


def _at(timesteps: torch.Tensor | None, i: int) -> Any:
    """The U-Net's timestep at step i (None past the end, or for a denoiser that needs none)."""
    return None if timesteps is None or i >= len(timesteps) else timesteps[i]


def euler(
    denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, timesteps: torch.Tensor | None = None
) -> torch.Tensor:
    """Euler on dx/dsigma = (x - D)/sigma: x <- x + (s' - s) (x - D(x; s)) / s. With s' = 0 the
    last step lands on D itself. = EulerDiscreteScheduler.step."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoiser(x, s, _at(timesteps, i))) / s
        x = x + d * (s_next - s)
    return x


def heun_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    s: torch.Tensor,
    s_next: torch.Tensor,
    t: Any = None,
    t_next: Any = None,
) -> torch.Tensor:
    """One step of Heun's method (the trapezoid rule; Karras et al. 2022, Alg. 1, lines 5-8):
    d = (x - D(x; s))/s, x' = x + (s' - s) d, d' = (x' - D(x'; s'))/s', x <- x + (s' - s)(d + d')/2.
    At s' = 0, d' is undefined and the step stays Euler's."""
    d = (x - denoiser(x, s, t)) / s
    x_euler = x + d * (s_next - s)
    if s_next == 0:
        return x_euler
    d_next = (x_euler - denoiser(x_euler, s_next, t_next)) / s_next
    return x + (d + d_next) / 2 * (s_next - s)


def heun(
    denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, timesteps: torch.Tensor | None = None
) -> torch.Tensor:
    """Heun steps along the schedule: 2 calls per step, 1 for the last (to sigma = 0), so
    2N - 1 in all. = HeunDiscreteScheduler (its timesteps list each inner timestep twice)."""
    for i in range(len(sigmas) - 1):
        x = heun_step(
            denoiser, x, sigmas[i], sigmas[i + 1], _at(timesteps, i), _at(timesteps, i + 1)
        )
    return x


def dpmpp_2m(
    denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, timesteps: torch.Tensor | None = None
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2), written in sigma. With lambda = -log sigma and
    h = lambda' - lambda, the exact solution of the ODE for a denoiser constant over the step is
    x' = (s'/s) x + (1 - s'/s) D, a DDIM step (= Euler in sigma). 2M replaces D by the linear
    extrapolation D + (D - D_prev) / (2 r), r = h_prev / h, from the previous step's D: second
    order at one call per step. First and last steps stay first order (diffusers with
    final_sigmas_type="zero")."""
    d_prev, h_prev = None, None
    n = len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = denoiser(x, s, _at(timesteps, i))
        if s_next == 0:  # the last step: x' = D
            return d
        h = torch.log(s) - torch.log(s_next)
        d_hat = d if d_prev is None else d + (d - d_prev) * (h / h_prev) / 2
        x = (s_next / s) * x + (1 - s_next / s) * d_hat
        d_prev, h_prev = d, h
    return x


def ancestral_sigmas(s: torch.Tensor, s_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_down, s_up): step deterministically to s_down, then add noise of std s_up, so that the
    noise level lands on s_next (s_down^2 + s_up^2 = s'^2) and the step is DDPM's posterior
    sample (eta = 1): s_up^2 = s'^2 (s^2 - s'^2) / s^2."""
    s_up = (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5
    return (s_next**2 - s_up**2) ** 0.5, s_up


def euler_ancestral(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    timesteps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euler ancestral, an SDE sampler: an Euler step to s_down, then x += s_up * n with fresh
    n ~ N(0, I) from `generator` (drawn on its device, then moved), at every step.
    = EulerAncestralDiscreteScheduler.step with the same generator."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoiser(x, s, _at(timesteps, i))) / s
        s_down, s_up = ancestral_sigmas(s, s_next)
        x = x + d * (s_down - s)
        gen_device = generator.device if generator is not None else "cpu"
        noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype)
        x = x + noise.to(x.device) * s_up
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": euler,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "euler_ancestral": euler_ancestral,
}


def nfe(method: str, steps: int) -> int:
    """Number of U-Net evaluations (NFE) of `steps` steps (each doubled batch counts once)."""
    check_method(method, steps)
    return 2 * steps - 1 if method == "heun" else steps


# --- on a pipeline -----------------------------------------------------------------------------


def unet_denoiser(pipe: StableDiffusionPipeline, guidance: Guidance) -> Denoiser:
    """D(x; sigma) = x - sigma * eps_cfg(x / sqrt(sigma^2 + 1), timestep): the U-Net (with
    classifier-free guidance) as a denoiser of the sigma-view latent x = z / sqrt(alpha_bar).
    x keeps its dtype (float32 for a half-precision U-Net); the U-Net gets its own."""
    unet_dtype = pipe.unet.dtype

    def denoise(x: torch.Tensor, sigma: torch.Tensor, timestep: Any) -> torch.Tensor:
        z = (x / (sigma**2 + 1) ** 0.5).to(unet_dtype)
        t = timestep.to(pipe.device) if isinstance(timestep, torch.Tensor) else timestep
        eps = guided_eps(pipe, z, t, guidance, scheduler=None)
        return x - sigma * eps.to(x.dtype)

    return denoise


@torch.no_grad()
def sample(
    pipe: StableDiffusionPipeline,
    prompt: str | Sequence[str],
    *,
    method: str,
    steps: int,
    guidance_scale: float = 7.5,
    seed: int = 0,
    karras_sigmas: bool = False,
    negative_prompt: str | Sequence[str] | None = None,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """The final latents (B, 4, h, w) of `method` ("euler", "heun", "dpmpp_2m",
    "euler_ancestral") in `steps` steps, written out here; equal to `pipe(prompt,
    num_inference_steps=steps, guidance_scale=guidance_scale, generator=torch.Generator("cpu")
    .manual_seed(seed), output_type="latent")` with pipe.scheduler replaced by the matching
    diffusers scheduler `from_config(pipe.scheduler.config)` (use_karras_sigmas=karras_sigmas).
    pipe.scheduler is only read (its config), never changed."""
    check_method(method, steps, karras_sigmas)
    prompts = as_prompt_list(prompt)
    height, width = check_generate_args(pipe, steps, guidance_scale, height, width, seed)
    text_emb, uncond_emb = encode_prompt(pipe, prompts, negative_prompt)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    plan = schedule(pipe.scheduler.config, method, steps, karras_sigmas)
    x = initial_latents(pipe, len(prompts), height, width, generator, plan.init_noise_sigma)
    denoiser = unet_denoiser(pipe, Guidance(text_emb, uncond_emb, float(guidance_scale)))
    sigmas = plan.sigmas.to(pipe.device)
    extra = {"generator": generator} if method == "euler_ancestral" else {}
    state = torch.promote_types(x.dtype, torch.float32)  # half-precision models: float32 state
    x = SOLVERS[method](denoiser, x.to(state), sigmas, plan.timesteps, **extra)
    return x.to(pipe.unet.dtype)


def diffusers_scheduler(pipe: StableDiffusionPipeline, method: str, karras: bool = False) -> Any:
    """The diffusers scheduler that `method` equals, built from pipe.scheduler's config."""
    import diffusers

    check_method(method, 1, karras)
    cls = getattr(diffusers, SCHEDULERS[method])
    extra = {"use_karras_sigmas": True} if karras else {}
    return cls.from_config(pipe.scheduler.config, **extra)


def toy_mixture_score(
    x: torch.Tensor, sigma: float | torch.Tensor, means: torch.Tensor, std: float
) -> torch.Tensor:
    """grad_x log p_sigma(x) for data drawn from an equal mixture of N(mu_k, std^2 I): noised by
    sigma it is the mixture of N(mu_k, (std^2 + sigma^2) I), whose score is
    sum_k w_k(x) (mu_k - x) / (std^2 + sigma^2), w = softmax_k(-|x - mu_k|^2 / (2 (std^2 + sigma^2)))."""
    var = std**2 + torch.as_tensor(sigma, dtype=x.dtype) ** 2
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * var), dim=1)
    return ((w[..., None] * (means[None] - x[:, None, :])).sum(1)) / var


def toy_mixture_log_density(
    x: torch.Tensor, sigma: float | torch.Tensor, means: torch.Tensor, std: float
) -> torch.Tensor:
    """log p_sigma(x) of the same mixture (the reference the score is checked against)."""
    var = std**2 + torch.as_tensor(sigma, dtype=x.dtype) ** 2
    dim = x.shape[-1]
    d2 = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    log_norm = -0.5 * dim * torch.log(2 * math.pi * var)
    return torch.logsumexp(-d2 / (2 * var) + log_norm, dim=1) - math.log(len(means))
