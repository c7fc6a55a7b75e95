"""img2img against StableDiffusionImg2ImgPipeline; inpainting and prompt switching properties.
inpaint against diffusers' StableDiffusionInpaintPipeline: notebook 07, cell 14 (DDIM in the two
mini-sd runs, PNDM in the sd15-small run)."""

import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline

from course_utils import editing
from course_utils.images import encode


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, 64, 64, generator=g) * 2 - 1).clamp(-1, 1)


# strength 1 (every step), a half start that floors (7 x 0.5 = 3.5: 3 steps), one step of 20;
# notebook 07, cell 6 compares 20 steps (5 in the quick runs) at strength 0.6 in every run
@pytest.mark.parametrize("steps, strength", [(4, 1.0), (7, 0.5), (20, 0.05)])
@pytest.mark.parametrize("scheduler_cls", [PNDMScheduler, DDIMScheduler])
def test_img2img_equals_diffusers(tiny_pipe, image, steps, strength, scheduler_cls):
    """editing.img2img against StableDiffusionImg2ImgPipeline on the same components."""
    sched = scheduler_cls.from_config(tiny_pipe.scheduler.config)
    ref_pipe = StableDiffusionImg2ImgPipeline(**tiny_pipe.components)
    ref_pipe.scheduler = scheduler_cls.from_config(tiny_pipe.scheduler.config)
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(
        "a red circle",
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=6.0,
        generator=torch.Generator("cpu").manual_seed(5),
        output_type="pt",
    ).images
    ours = editing.img2img(
        tiny_pipe,
        image,
        "a red circle",
        strength=strength,
        steps=steps,
        guidance_scale=6.0,
        seed=5,
        scheduler=sched,
    ).images
    assert (ours - ref).abs().max().item() <= 1e-4


def test_start_step_arithmetic():
    assert editing.start_step(50, 0.8) == 10  # runs the last 40 of 50
    assert editing.start_step(10, 1.0) == 0
    assert editing.start_step(7, 0.5) == 4  # floor(3.5) = 3 steps run
    with pytest.raises(ValueError, match="runs no step"):
        editing.start_step(10, 0.05)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
            editing.start_step(10, bad)


def test_inpaint_keeps_the_known_region_exactly_in_latent_space(tiny_pipe, image):
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1
    out = editing.inpaint(tiny_pipe, image, mask, "a cat", steps=5, seed=1)
    g = torch.Generator().manual_seed(1)  # the same draw of the posterior sample as inpaint's
    dist = tiny_pipe.vae.encode(image).latent_dist
    z_image = (
        dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)
    ) * tiny_pipe.vae.config.scaling_factor
    m = editing.latent_mask(mask, image, 8)
    assert torch.allclose(out.latents * (1 - m), z_image * (1 - m), atol=1e-6)
    assert not torch.allclose(out.latents * m, z_image * m, atol=1e-2)  # the hole was regenerated
    assert encode(tiny_pipe.vae, image).shape == out.latents.shape


def test_prompt_switch_ends(tiny_pipe):
    from course_utils.sampling import generate

    a = editing.prompt_switch(tiny_pipe, "a cat", "a dog", 1.0, steps=4, seed=2).images
    b = editing.prompt_switch(tiny_pipe, "a cat", "a dog", 0.0, steps=4, seed=2).images
    assert (a - generate(tiny_pipe, "a cat", steps=4, seed=2).images).abs().max() <= 1e-4
    assert (b - generate(tiny_pipe, "a dog", steps=4, seed=2).images).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, im: editing.inpaint(p, im, torch.ones(32, 32), "x", steps=2), "mask must be"),
        (
            lambda p, im: editing.inpaint(p, im, torch.full((64, 64), 0.5), "x", steps=2),
            "0 \\(keep\\) or 1",
        ),
        (lambda p, im: editing.img2img(p, im, "x", strength=1.2), "strength must be"),
        (lambda p, im: editing.img2img(p, im[:, :1], "x"), "RGB tensor"),
        (lambda p, im: editing.img2img(p, im[..., :60], "x"), "multiples of 8"),
        (lambda p, im: editing.prompt_switch(p, "a", "b", 2.0), "switch_at"),
        (lambda p, im: editing.img2img(p, im * float("nan"), "x"), "NaN or inf"),
        (lambda p, im: editing.img2img(p, (im + 1) * 127.5, "x"), "looks like 0..255"),
        (lambda p, im: editing.inpaint(p, (im + 1) * 127.5, torch.zeros(64, 64), "x"), "0..255"),
        (lambda p, im: editing.inpaint(p, im, torch.zeros(64, 64), "x", feather=-1), "feather"),
        (lambda p, im: editing.inpaint(p, im, torch.zeros(64, 64), "x", resample=1.5), "resample"),
        (  # PNDM keeps a history: a repeated step would corrupt it
            lambda p, im: editing.inpaint(
                p,
                im,
                torch.zeros(64, 64),
                "x",
                steps=2,
                resample=1,
                scheduler=PNDMScheduler.from_config(p.scheduler.config),
            ),
            "only stateless schedulers",
        ),
    ],
)
def test_bad_input(tiny_pipe, image, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_pipe, image)


def test_inpaint_overlay_keeps_pixels_outside_the_mask(tiny_pipe, image):
    mask = torch.zeros(64, 64)
    mask[:, 40:] = 1
    out = editing.inpaint(tiny_pipe, image, mask, "a dog", steps=3, seed=0)
    keep = mask == 0
    assert torch.equal(out.images[0][:, keep], ((image[0] / 2 + 0.5).clamp(0, 1))[:, keep])
    raw = editing.inpaint(tiny_pipe, image, mask, "a dog", steps=3, seed=0, overlay=False)
    assert torch.equal(raw.images[0][:, ~keep], out.images[0][:, ~keep])


def test_repaint_resampling_and_feathering_keep_the_far_known_region(tiny_pipe, image):
    mask = torch.zeros(64, 64)
    mask[32:, 32:] = 1
    m = editing.latent_mask(mask, image, 8)
    far = torch.ones_like(m)
    far[..., 2:, 2:] = 0  # latent cells at least two away from the hole
    ddim = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    plain = editing.inpaint(tiny_pipe, image, mask, "a dog", steps=4, seed=1, scheduler=ddim)
    for kw in (dict(resample=2), dict(feather=0.5)):  # radius round(3 * 0.5) = 2 cells
        out = editing.inpaint(
            tiny_pipe, image, mask, "a dog", steps=4, seed=1, scheduler=ddim, **kw
        )
        assert torch.allclose(out.latents * far, plain.latents * far, atol=1e-5), kw
        assert not torch.allclose(out.latents * m, plain.latents * m, atol=1e-3), kw
