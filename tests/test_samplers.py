"""The hand-written samplers equal diffusers' schedulers run by StableDiffusionPipeline, and the
toy's score equals autograd's gradient of its log-density (the independent references). That the
solvers converge at their order on the toy is asserted by notebook 09, cell 37, in every run."""

import diffusers
import pytest
import torch
from diffusers import PNDMScheduler

from course_utils import check
from course_utils import samplers as S

PROMPTS = ["a red circle", "a blue square on a green background"]


def pipeline_latents(pipe, method, karras, steps, g, seed=3, negative_prompt=None):
    original = pipe.scheduler
    pipe.scheduler = S.diffusers_scheduler(pipe, method, karras)
    try:
        return pipe(
            PROMPTS,
            num_inference_steps=steps,
            guidance_scale=g,
            negative_prompt=negative_prompt,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
        ).images
    finally:
        pipe.scheduler = original


# One unguided step of each method, and a guided ancestral run long enough for its noise draws
# to count (one step ends at sigma 0: no noise). Every (method, Karras) pair, guided, over 10
# steps (3 in the quick runs) is compared to the pipeline by notebook 09, cell 34, in every run.
CASES = [(method, False, 1, 1.0) for method in S.SCHEDULERS] + [("euler_ancestral", False, 3, 7.5)]


@pytest.mark.parametrize(("method", "karras", "steps", "g"), CASES)
def test_sample_equals_the_pipeline_with_that_scheduler(tiny_pipe, method, karras, steps, g):
    """samplers.sample against StableDiffusionPipeline run with diffusers' scheduler."""
    ours = S.sample(
        tiny_pipe,
        PROMPTS,
        method=method,
        steps=steps,
        guidance_scale=g,
        seed=3,
        karras_sigmas=karras,
    )
    ref = pipeline_latents(tiny_pipe, method, karras, steps, g)
    assert ours.shape == ref.shape == (2, 4, 8, 8)
    # Equal to float32 rounding, as notebook 09 checks it (cu.check.tolerance, 1000 ulps of the
    # latents' scale: 2N U-Net calls carry the start's roundings to the end). The same operations
    # are bit-identical on one CPU and 1.5e-5 apart on another (AVX2 vs AVX-512); DPM-Solver++ is
    # the same algebra in other variables (diffusers' VP z, alpha_t, sigma_t; ours sigma, as
    # k-diffusion), see test_dpmpp_gap_is_float32_rounding.
    assert (ours - ref).abs().max().item() <= check.tolerance(ref, ulps=1000)


def test_dpmpp_gap_is_float32_rounding(tiny_pipe):
    ours = S.sample(tiny_pipe, PROMPTS, method="dpmpp_2m", steps=9, guidance_scale=7.5, seed=3)
    ref32 = pipeline_latents(tiny_pipe, "dpmpp_2m", False, 9, 7.5)
    tiny_pipe.to(torch.float64)
    try:
        ref64 = pipeline_latents(tiny_pipe, "dpmpp_2m", False, 9, 7.5)
    finally:
        tiny_pipe.to(torch.float32)
    ours_gap = (ours - ref32).abs().max().item()
    float32_gap = (ref32.double() - ref64).abs().max().item()
    assert ours_gap <= 10 * float32_gap + 1e-6, (ours_gap, float32_gap)


def test_negative_prompt_and_scheduler_left_alone(tiny_pipe):
    before = tiny_pipe.scheduler
    ours = S.sample(
        tiny_pipe, PROMPTS, method="heun", steps=4, negative_prompt=["green"] * 2, seed=1
    )
    assert tiny_pipe.scheduler is before and isinstance(before, PNDMScheduler)
    ref = pipeline_latents(tiny_pipe, "heun", False, 4, 7.5, seed=1, negative_prompt=["green"] * 2)
    assert (ours - ref).abs().max().item() <= check.tolerance(ref, ulps=1000)


SCHEDULE_CASES = [
    (spacing, method, karras, steps)
    for spacing in ("leading", "linspace", "trailing")
    for method in S.SCHEDULERS
    for karras in (False, True)
    if not karras or method in S.KARRAS
    for steps in (1, 7)
]


@pytest.mark.parametrize(("spacing", "method", "karras", "steps"), SCHEDULE_CASES)
def test_schedule_equals_the_schedulers(tiny_pipe, spacing, method, karras, steps):
    config = dict(tiny_pipe.scheduler.config) | {"timestep_spacing": spacing}
    cls = getattr(diffusers, S.SCHEDULERS[method])
    ref = cls.from_config(config, **({"use_karras_sigmas": True} if karras else {}))
    ref.set_timesteps(steps)
    ours = S.schedule(config, method, steps, karras)
    sigmas, timesteps = ref.sigmas, ref.timesteps
    if method == "heun":  # Heun lists each inner sigma and timestep twice
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])
        timesteps = torch.cat([timesteps[:1], timesteps[1::2]])
    assert torch.allclose(ours.sigmas, sigmas.float(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(ours.timesteps.double(), timesteps.double(), atol=1e-4)
    assert ours.timesteps.dtype == timesteps.dtype
    init = float(ref.init_noise_sigma)
    if method == "dpmpp_2m":  # DPM-Solver starts from z_T = n, i.e. x_T = sqrt(sigma_max^2 + 1) n
        init *= float(sigmas[0] ** 2 + 1) ** 0.5
    assert ours.init_noise_sigma == pytest.approx(init, rel=1e-6)


def test_karras_sigmas_closed_form():
    s = S.karras_sigmas(0.03, 14.6, 5, rho=7.0)
    assert s[0] == pytest.approx(14.6) and s[-1] == pytest.approx(0.03)
    assert s[2] == pytest.approx(((14.6 ** (1 / 7) + 0.03 ** (1 / 7)) / 2) ** 7)
    assert (
        abs(S.karras_sigmas(0.03, 14.6, 5, rho=1.0) - [14.6, 10.9575, 7.315, 3.6725, 0.03]) < 1e-9
    ).all()


@pytest.mark.parametrize("method", list(S.SCHEDULERS))
def test_nfe_counts_unet_calls(tiny_pipe, method):
    """nfe() is the number of U-Net calls sample() makes: 2N - 1 for Heun, N otherwise, the
    guided (doubled) batch counting once."""
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        S.sample(tiny_pipe, "a cat", method=method, steps=2, guidance_scale=7.5)
    finally:
        hook.remove()
    assert len(calls) == S.nfe(method, 2) == (3 if method == "heun" else 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "ddim", "steps": 4}, "unknown sampler 'ddim'"),
        ({"method": "euler", "steps": 0}, "steps must be an integer >= 1"),
        ({"method": "euler", "steps": 2.5}, "steps must be an integer >= 1"),
        ({"method": "euler_ancestral", "steps": 4, "karras_sigmas": True}, "no Karras sigmas"),
        ({"method": "heun", "steps": 4, "guidance_scale": float("nan")}, "guidance_scale"),
    ],
)
def test_bad_arguments_give_clear_errors(tiny_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.sample(tiny_pipe, "a cat", **kwargs)


def test_toy_score_is_the_gradient_of_the_log_density():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(5, 2, generator=g, dtype=torch.float64) * 2
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 3
    for sigma in (0.01, 0.3, 2.0, 14.6):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(S.toy_mixture_log_density(x, sigma, means, 0.1).sum(), x)
        x = x.detach()
        assert torch.allclose(S.toy_mixture_score(x, sigma, means, 0.1), grad, atol=1e-10)


def test_toy_log_density_integrates_to_one():
    means = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    grid = torch.linspace(-6, 7, 521, dtype=torch.float64)
    xy = torch.cartesian_prod(grid, grid)
    mass = S.toy_mixture_log_density(xy, 0.5, means, 0.2).exp().sum() * (grid[1] - grid[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-6)
