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


def test_generate_panel_controls_drive_the_callback(tiny_pipe):
    panel = widgets.generate_panel(tiny_pipe)
    controls = {c.description: c for c in panel.children if hasattr(c, "description")}
    controls["prompt"].value, controls["steps"].value, controls["seed"].value = "a dog", 2, 5
    controls["guidance_scale"].value = 3.0
    panel.update()  # what the "generate" button does
    ref = widgets.generate_image(tiny_pipe, "a dog", guidance_scale=3.0, steps=2, seed=5)
    assert list(panel.result.getdata()) == list(ref.getdata())


def test_flow_and_channel_panels_run_at_their_extremes(tiny_pipe, capsys):
    sch = flow.DiffusionScheduler(tiny_pipe.scheduler.alphas_cumprod)
    z = torch.zeros(1, 4, 8, 8)
    panel = widgets.flow_panel(sch, tiny_pipe.vae, z)
    for t, k in ((0.0, 999), (1.0, 0)):  # t = 0 is noise (k = 999), t = 1 data (k = 0)
        panel.children[0].value = t
        panel.update()
        assert f"t={t:.2f}  k={k}  " in capsys.readouterr().out
    panel = widgets.channel_panel(tiny_pipe.vae, z)
    assert panel.children[0].max == z.shape[1] - 1  # one position per latent channel
    panel.children[0].value, panel.children[1].value = 3, -2.0
    panel.update()  # decodes the latent with channel 3 scaled by -2
