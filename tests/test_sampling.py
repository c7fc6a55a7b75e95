"""The hand-written loop equals StableDiffusionPipeline.__call__ (the independent reference)."""

import pytest
import torch
from diffusers import EulerDiscreteScheduler, LMSDiscreteScheduler

from course_utils import check
from course_utils.sampling import encode_prompt, generate


def pipeline_images(pipe, prompt, seed, **kw):
    return pipe(
        prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", **kw
    ).images


@pytest.mark.parametrize("scheduler_cls", [LMSDiscreteScheduler, EulerDiscreteScheduler])
def test_generate_equals_pipeline(tiny_pipe, scheduler_cls):
    """generate() against StableDiffusionPipeline.__call__ with the schedulers that scale the
    model input (sigma-space). DDIM and PNDM: notebook 06, cell 6 (DDIM, mini-sd's, in the two
    mini-sd runs; PNDM in the sd15-small run)."""
    original = tiny_pipe.scheduler
    tiny_pipe.scheduler = scheduler_cls.from_config(original.config)
    try:
        ours = generate(tiny_pipe, "a red circle", steps=4, guidance_scale=7.5, seed=3).images
        ref = pipeline_images(
            tiny_pipe, "a red circle", 3, num_inference_steps=4, guidance_scale=7.5
        )
    finally:
        tiny_pipe.scheduler = original
    assert (ours - ref.cpu()).abs().max().item() <= 1e-4


def test_negative_prompts_and_batches(tiny_pipe):
    prompts, negatives = ["a red circle", "a blue square"], ["blurry", "green"]
    ours = generate(
        tiny_pipe, prompts, steps=4, guidance_scale=5.0, seed=1, negative_prompt=negatives
    ).images
    ref = pipeline_images(
        tiny_pipe, prompts, 1, num_inference_steps=4, guidance_scale=5.0, negative_prompt=negatives
    )
    assert ours.shape == (2, 3, 64, 64)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_guidance_one_skips_the_unconditional_pass(tiny_pipe):
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        ours = generate(tiny_pipe, "a cat", steps=3, guidance_scale=1.0, seed=2).images
    finally:
        hook.remove()
    assert set(calls) == {1}  # batch of one: no doubled batch
    ref = pipeline_images(tiny_pipe, "a cat", 2, num_inference_steps=3, guidance_scale=1.0)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_non_default_size(tiny_pipe):
    ours = generate(tiny_pipe, "a cat", steps=2, seed=0, height=48, width=80).images
    ref = pipeline_images(tiny_pipe, "a cat", 0, num_inference_steps=2, height=48, width=80)
    assert ours.shape == (1, 3, 48, 80) and (ours - ref).abs().max().item() <= 1e-4


def test_same_seed_same_image_other_seed_other_image(tiny_pipe):
    a = generate(tiny_pipe, "a cat", steps=2, seed=5).images
    b = generate(tiny_pipe, "a cat", steps=2, seed=5).images
    c = generate(tiny_pipe, "a cat", steps=2, seed=6).images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trajectory_and_callback(tiny_pipe):
    seen = []
    out = generate(
        tiny_pipe,
        "a cat",
        steps=3,
        seed=0,
        return_trajectory=True,
        callback=lambda i, t, z: seen.append(i),
    )
    assert len(out.trajectory) == len(tiny_pipe.scheduler.timesteps) == len(seen)
    assert torch.equal(out.trajectory[-1], out.latents)


def test_encode_prompt_shapes_and_empty_negative(tiny_pipe):
    text_emb, uncond_emb = encode_prompt(tiny_pipe, ["a", "b"])
    assert text_emb.shape == uncond_emb.shape == (2, 77, tiny_pipe.text_encoder.config.hidden_size)
    # both are the empty prompt: equal to float32 rounding (two rows of a batch may round
    # differently on torch's plain C kernels, ATEN_CPU_CAPABILITY=default)
    assert (uncond_emb[0] - uncond_emb[1]).abs().max() <= check.tolerance(uncond_emb[1])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(prompt=42), TypeError, "prompt must be a string"),
        (dict(prompt=[]), ValueError, "empty list"),
        (dict(prompt=["ok", None]), TypeError, "every prompt must be a string"),
        (dict(height=60), ValueError, "height must be a positive multiple of 8"),
        (dict(width=-64), ValueError, "width must be a positive multiple of 8"),
        (dict(steps=0), ValueError, "steps must be an integer >= 1"),
        (dict(steps=2.5), ValueError, "steps must be an integer >= 1"),
        (dict(guidance_scale=-1.0), ValueError, "guidance_scale must be a number >= 0"),
        (dict(guidance_scale=float("nan")), ValueError, "not NaN or inf"),
        (dict(guidance_scale=float("inf")), ValueError, "not NaN or inf"),
        (dict(height=0), ValueError, r"height must be a positive multiple of 8 .*, got 0$"),
        (dict(width=0), ValueError, r"width must be a positive multiple of 8 .*, got 0$"),
        (dict(seed="3"), TypeError, "seed must be an integer, got str"),
        (dict(seed=1.5), TypeError, "seed must be an integer, got float"),
        (dict(negative_prompt=["a", "b"]), ValueError, "2 negative prompts for 1 prompts"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_pipe, kwargs, error, match):
    args = dict(prompt="a cat", steps=2) | kwargs
    with pytest.raises(error, match=match):
        generate(tiny_pipe, args.pop("prompt"), **args)


def test_half_precision_vae_overflow_is_decoded_in_float32(tiny_pipe, monkeypatch):
    """An fp16 decoder that overflows (as SD's can on a GPU) gives NaN; images.decode retries in fp32."""
    from course_utils.images import decode

    vae = tiny_pipe.vae
    real_decode = vae.decode

    def overflowing_decode(z, *a, **kw):
        out = real_decode(z.to(vae.dtype), *a, **kw)
        if vae.dtype == torch.float16:
            out.sample = torch.full_like(out.sample, float("nan"))
        return out

    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = decode(tiny_pipe.vae, latents, value_range="unit")
    monkeypatch.setattr(vae, "decode", overflowing_decode)
    vae.to(torch.float16)
    try:
        images = decode(tiny_pipe.vae, latents.half(), value_range="unit")
    finally:
        vae.to(torch.float32)
    assert torch.isfinite(images).all() and vae.dtype == torch.float32
    assert (images - expected).abs().max() < 1e-2  # fp16 latents in, fp32 decode


def test_a_real_fp16_overflow_is_decoded_in_float32(tiny_pipe):
    """No mock: latents of magnitude 1e4 overflow float16's range (max 65504) inside the decoder,
    as SD 1.5's fp16 VAE can on a GPU; images.decode sees the inf/NaN and decodes in float32."""
    from course_utils.images import decode

    vae = tiny_pipe.vae
    latents = 1e4 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = decode(tiny_pipe.vae, latents, value_range="unit")  # float32 all the way
    vae.to(torch.float16)
    try:
        raw = vae.decode(latents.half() / vae.config.scaling_factor).sample
        assert not torch.isfinite(raw).all()  # the overflow is real
        images = decode(tiny_pipe.vae, latents.half(), value_range="unit")
        assert vae.dtype == torch.float16  # the fallback gives the VAE back in its dtype
    finally:
        vae.to(torch.float32)
    assert torch.isfinite(images).all()
    assert (images - expected).abs().max() < 1e-2  # fp16-rounded latents, fp32 decode


def test_numpy_seeds_and_scales_work_like_python_numbers(tiny_pipe):
    import numpy as np

    a = generate(tiny_pipe, "a cat", steps=2, seed=3, guidance_scale=2.0).images
    b = generate(tiny_pipe, "a cat", steps=2, seed=np.int64(3), guidance_scale=np.float32(2.0))
    assert torch.equal(a, b.images)
