import pytest
import torch

from course_utils import check, gym


def solid(rgb, n=1, size=8):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size).clone()


def test_red_reward_orders_colors_and_is_gamed_by_white():
    red, blue, white = solid([1, 0, 0]), solid([0, 0, 1]), solid([1, 1, 1])
    r = gym.RedReward()
    assert r(red)[0].item() == 1.0 and r(blue)[0].item() == 0.0
    assert r(white)[0].item() == r(red)[0].item()  # the flaw notebook 06 exposes


def test_redness_reward_fixes_it():
    r = gym.RednessReward()
    scores = [r(solid(c))[0].item() for c in ([1, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [0, 1, 1])]
    assert scores == pytest.approx([1.0, 0.0, 0.0, -1.0])


def test_rewards_report_invalid_samples():
    images = torch.cat([solid([1, 0, 0]), solid([float("nan"), 0, 0])])
    reward, valid = gym.RedReward()(images)
    assert valid.tolist() == [True, False]


def test_reward_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        gym.RedReward()(torch.zeros(3, 8, 8))


def test_registry_duplicates_and_unknown_ids():
    reg = gym.Registry("thing")
    reg.register("a/one", x=1)(dict)
    assert reg.make("a/one") == {"x": 1} and reg.make("a/one", x=2) == {"x": 2}
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a/one")(dict)
    with pytest.raises(KeyError, match="registered: a/one"):
        reg.make("a/two")
    assert (
        "images/red" in gym.reward_registry and "images/stable_diffusion" in gym.base_model_registry
    )


def test_make_checks_domains(monkeypatch):
    monkeypatch.setitem(gym.reward_registry._entries, "text/length", (gym.Reward, {}))
    with pytest.raises(ValueError, match="different domains"):
        gym.make("images/stable_diffusion", "text/length", 4)


def test_forward_cfg_equals_the_pipeline_formula(tiny_pipe):
    model = gym.StableDiffusionBaseModel(tiny_pipe, prompt="a red circle", guidance_scale=7.5)
    x, cond = model.sample_p0(2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.3)
    k = model.scheduler.model_input(t).expand(2)
    with torch.no_grad():
        eps_u = tiny_pipe.unet(x, k, encoder_hidden_states=cond["uncond_emb"]).sample
        eps_c = tiny_pipe.unet(x, k, encoder_hidden_states=cond["text_emb"]).sample
        ours = model(x, t, **cond)
    assert torch.allclose(ours, eps_u + 7.5 * (eps_c - eps_u), atol=1e-4)


def test_environment_sample(tiny_pipe):
    env = gym.make(
        "images/stable_diffusion",
        "images/red",
        discretization_steps=3,
        reward_scale=2.0,
        base_model_kwargs=dict(pipe=tiny_pipe),
    )
    out = env.sample(2, generator=torch.Generator().manual_seed(1))
    assert out.images.shape == (2, 3, 64, 64) and out.trajectory.shape == (4, 2, 4, 8, 8)
    assert torch.equal(out.trajectory[-1], out.latents)
    direct, _ = gym.RedReward()(out.images)
    assert torch.allclose(out.rewards, 2.0 * direct)
    again = env.sample(2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.images, out.images)


def test_bad_arguments(tiny_pipe):
    with pytest.raises(ValueError, match="discretization_steps must be an integer >= 1"):
        gym.make("images/stable_diffusion", "images/red", 0, base_model_kwargs=dict(pipe=tiny_pipe))
    model = gym.StableDiffusionBaseModel(tiny_pipe)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        model.sample_p0(0)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        gym.StableDiffusionBaseModel(tiny_pipe, guidance_scale=-2)


def test_reward_guidance_at_scale_zero_is_plain_sampling(tiny_pipe):
    """reward_guided_sample(scale=0) gives env.sample's images. That guidance raises the reward,
    and equals the update written by hand, is asserted by notebook 06, cell 37, in every run."""
    env = gym.make(
        "images/stable_diffusion",
        "images/redness",
        discretization_steps=4,
        base_model_kwargs=dict(pipe=tiny_pipe),
    )
    plain = env.sample(4, generator=torch.Generator().manual_seed(0))
    same = gym.reward_guided_sample(env, 4, scale=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(same.images, plain.images, atol=1e-5)


def test_reward_gradient_in_chunks_equals_one_batch(tiny_pipe, monkeypatch):
    """reward_direction back-propagates GRAD_CHUNK samples at a time (SD 1.5's decoder keeps
    2.8 GiB an image): the same normalised gradient as one batch of 5."""
    env = gym.make(
        "images/stable_diffusion",
        "images/redness",
        discretization_steps=4,
        base_model_kwargs=dict(pipe=tiny_pipe),
    )
    x, eps = torch.randn(5, 4, 8, 8), torch.randn(5, 4, 8, 8)
    t = torch.tensor(0.5)
    chunked = env.reward_direction(x, eps, t)
    monkeypatch.setattr(gym, "GRAD_CHUNK", 5)
    batched = env.reward_direction(x, eps, t)  # a backward pass through a decoder: 1000 ulps
    assert (chunked - batched).abs().max() <= check.tolerance(batched, ulps=1000)
