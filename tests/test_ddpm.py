"""course_utils.ddpm against diffusers.DDPMScheduler and closed forms."""

import pytest
import torch
from diffusers import DDPMScheduler

from course_utils import ddpm
from course_utils.mini.arch import SD_SCHEDULER


@pytest.fixture(scope="module")
def sched():
    return DDPMScheduler.from_config(SD_SCHEDULER)


@pytest.fixture(scope="module")
def abar():
    return ddpm.alphas_cumprod(ddpm.scaled_linear_betas())


def test_betas_and_alphas_cumprod_equal_diffusers(sched, abar):
    assert torch.equal(ddpm.scaled_linear_betas(), sched.betas)
    assert torch.allclose(abar, sched.alphas_cumprod, atol=0, rtol=1e-6)


def test_schedule_closed_form_ends():
    betas = ddpm.scaled_linear_betas()
    assert betas[0].item() == pytest.approx(0.00085, rel=1e-5)
    assert betas[-1].item() == pytest.approx(0.012, rel=1e-5)
    assert torch.all(betas.diff() > 0)


def test_add_noise_equals_diffusers(sched, abar):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 4, 8, 8, generator=g), torch.randn(5, 4, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 998, 999])
    assert torch.allclose(
        ddpm.add_noise(x0, noise, t, abar), sched.add_noise(x0, noise, t), atol=1e-6
    )


def test_add_noise_scalar_t(sched, abar):
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    ref = sched.add_noise(x0, noise, torch.tensor([250, 250]))
    assert torch.allclose(ddpm.add_noise(x0, noise, 250, abar), ref, atol=1e-6)


def test_add_noise_moments_match_closed_form(abar):
    # x_t | x_0 ~ N(sqrt(abar_t) x_0, 1 - abar_t): check on 200k samples (standard error ~0.003)
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((200_000,), 0.7)
    xt = ddpm.add_noise(x0, torch.randn(200_000, generator=g), 300, abar)
    assert xt.mean().item() == pytest.approx(abar[300].sqrt().item() * 0.7, abs=0.01)
    assert xt.var().item() == pytest.approx(1 - abar[300].item(), abs=0.01)


@pytest.mark.parametrize("t", [0, 1, 37, 500, 999])
def test_posterior_closed_form(abar, t):
    betas = ddpm.scaled_linear_betas()
    x0, xt = torch.randn(3, 4), torch.randn(3, 4)
    ab_prev = abar[t - 1] if t > 0 else torch.tensor(1.0)
    coef0 = ab_prev.sqrt() * betas[t] / (1 - abar[t])
    coeft = (1 - betas[t]).sqrt() * (1 - ab_prev) / (1 - abar[t])
    post = ddpm.posterior(x0, xt, t, abar)
    # posterior() recovers beta_t as 1 - abar_t / abar_{t-1} (as diffusers does): in float32 that
    # cancellation costs ~1e-4 relative at small t, hence the tolerance
    assert torch.allclose(post.mean, coef0 * x0 + coeft * xt, rtol=1e-3, atol=1e-4)
    assert torch.allclose(post.variance, (1 - ab_prev) / (1 - abar[t]) * betas[t], rtol=1e-3)


def test_posterior_is_the_bayes_combination(abar):
    """Independent check of Eq. 7 by Gaussian conditioning: sample (x_{t-1}, x_t) given x_0 and
    regress x_{t-1} on x_t; slope and residual variance equal the posterior's."""
    t, n = 400, 400_000
    g = torch.Generator().manual_seed(2)
    x0 = torch.zeros(n)
    x_prev = ddpm.add_noise(x0, torch.randn(n, generator=g), t - 1, abar)
    beta_t = 1 - abar[t] / abar[t - 1]
    xt = (1 - beta_t).sqrt() * x_prev + beta_t.sqrt() * torch.randn(n, generator=g)
    slope = (x_prev * xt).mean() / (xt * xt).mean()
    resid = (x_prev - slope * xt).var()
    post = ddpm.posterior(x0[:1], torch.ones(1), t, abar)
    assert slope.item() == pytest.approx(post.mean.item(), abs=0.01)
    assert resid.item() == pytest.approx(post.variance.item(), rel=0.02)


@pytest.mark.parametrize("t", [999, 500, 1, 0])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddpm_step_equals_diffusers(abar, t, clip):
    sched = DDPMScheduler.from_config({**SD_SCHEDULER, "clip_sample": clip is not None})
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(3))
    ours = ddpm.ddpm_step(
        eps, t, x, abar, generator=torch.Generator().manual_seed(3), clip_sample=clip
    )
    assert torch.allclose(ours.prev, ref.prev_sample, atol=1e-5)
    assert torch.allclose(ours.x0_pred, ref.pred_original_sample, atol=1e-5)


def test_ddpm_step_with_fewer_steps_equals_diffusers(abar):
    sched = DDPMScheduler.from_config(SD_SCHEDULER)
    sched.set_timesteps(50)
    x = torch.randn(1, 4, 8, 8)
    for t in sched.timesteps[:3]:
        eps = torch.randn_like(x)
        ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(4)).prev_sample
        prev_t = int(t) - 1000 // 50
        ours = ddpm.ddpm_step(eps, int(t), x, abar, torch.Generator().manual_seed(4), prev_t=prev_t)
        assert torch.allclose(ours.prev, ref, atol=1e-5)
        x = ref


def test_training_loss_is_zero_for_the_oracle(abar):
    """With an eps-model that knows the noise, Algorithm 1's loss is 0; with zeros it is E[eps^2]=1."""
    x0 = torch.zeros(4096, 2)
    oracle = lambda xt, t: (
        (xt - ddpm._at(abar, t, xt).sqrt() * x0) / (1 - ddpm._at(abar, t, xt)).sqrt()
    )
    g = torch.Generator().manual_seed(5)
    assert ddpm.training_loss(oracle, x0, abar, g).item() == pytest.approx(0, abs=1e-6)
    zero = lambda xt, t: torch.zeros_like(xt)
    assert ddpm.training_loss(zero, x0, abar, g).item() == pytest.approx(1, abs=0.05)


def test_bad_inputs(abar):
    with pytest.raises(ValueError, match=r"timesteps must be in \[0, 999\]"):
        ddpm.add_noise(torch.zeros(1), torch.zeros(1), 1000, abar)
    with pytest.raises(TypeError, match="integer timesteps"):
        ddpm.add_noise(torch.zeros(1), torch.zeros(1), torch.tensor([0.5]), abar)
    with pytest.raises(ValueError, match="same shape"):
        ddpm.add_noise(torch.zeros(2), torch.zeros(3), 0, abar)
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        ddpm.scaled_linear_betas(0.1, 0.01)


@pytest.mark.parametrize("t", [1, 500, 999])
def test_ddpm_step_in_half_precision_follows_diffusers(t):
    """The schedule's coefficients stay in float32 (as in DDPMScheduler.step): in fp16,
    1 - alpha_bar_t near t = 0 would round to half its value."""
    ref = DDPMScheduler.from_config(SD_SCHEDULER)  # SD does not clip x0
    ab = ddpm.alphas_cumprod(ddpm.scaled_linear_betas())
    g = torch.Generator().manual_seed(0)
    xt, eps = (
        torch.randn(2, 4, 8, 8, generator=g).half(),
        torch.randn(2, 4, 8, 8, generator=g).half(),
    )
    ours = ddpm.ddpm_step(eps, t, xt, ab, generator=torch.Generator().manual_seed(1))
    theirs = ref.step(eps, t, xt, generator=torch.Generator().manual_seed(1))
    assert ours.prev.dtype == torch.float16
    scale = theirs.prev_sample.float().abs().max()
    assert (ours.prev.float() - theirs.prev_sample.float()).abs().max() <= 2e-3 * scale
