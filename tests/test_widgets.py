import torch

from course_utils import ddpm, flow, widgets


def test_generate_image_callback(tiny_pipe):
    from course_utils.sampling import generate

    img = widgets.generate_image(tiny_pipe, "a cat", guidance_scale=3.0, steps=2, seed=4)
    ref = generate(tiny_pipe, "a cat", steps=2, guidance_scale=3.0, seed=4).pil()[0]
    assert img.size == (64, 64) and list(img.getdata()) == list(ref.getdata())


def test_flow_state_callback():
    sch = flow.DiffusionScheduler(ddpm.alphas_cumprod(ddpm.scaled_linear_betas()))
    z1 = torch.ones(1, 4, 8, 8)
    s = widgets.flow_state(sch, z1, 1.0)
    assert s["k"] == 0 and abs(s["alpha"] ** 2 + s["beta"] ** 2 - 1) < 1e-6
    eps = torch.randn(z1.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s["x_t"], s["alpha"] * z1 + s["beta"] * eps)


def test_scaled_channel_callback():
    z = torch.ones(1, 4, 2, 2)
    out = widgets.scaled_channel(z, 2, 3.0)
    assert out[0, 2].eq(3).all() and out[0, [0, 1, 3]].eq(1).all() and z.eq(1).all()


def test_generate_panel_builds(tiny_pipe):
    panel = widgets.generate_panel(tiny_pipe)
    assert {c.description for c in panel.children if hasattr(c, "description")} >= {
        "prompt",
        "steps",
        "seed",
    }


def test_flow_and_channel_panels_build(tiny_pipe):
    sch = flow.DiffusionScheduler(tiny_pipe.scheduler.alphas_cumprod)
    z = torch.zeros(1, 4, 8, 8)
    assert len(widgets.flow_panel(sch, tiny_pipe.vae, z).children) >= 2
    assert len(widgets.channel_panel(tiny_pipe.vae, z).children) >= 3
