"""Image-to-image, inpainting and prompt editing with the loop of notebook 06 (taught in 07).

Image-to-image (SDEdit, Meng et al. 2022): encode the picture, noise it to the timestep that
`strength` selects, and run only the remaining steps. With N steps, the loop skips the first
t_start = N - floor(N * strength) of them (diffusers' arithmetic, easy to get off by one):
strength 1 starts from pure noise at the first timestep, strength 0.25 runs the last quarter.

Inpainting with a plain text-to-image U-Net (blended latent diffusion, Avrahami et al. 2023):
after every step, put back the *known* region, noised to the level of the next step:
    z <- m * z + (1 - m) * add_noise(z_image, eps, t_next),    m = 1 where we regenerate
(what StableDiffusionInpaintPipeline does with a 4-channel U-Net; SD's dedicated inpainting
checkpoint instead feeds the mask and the masked image's latents as 5 extra input channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from course_utils.images import check_image, decode, encode, to_unit_range
from course_utils.sampling import Generation, denoise, encode_prompt, initial_latents, prepare

if TYPE_CHECKING:
    from diffusers import SchedulerMixin, StableDiffusionPipeline


def start_step(steps: int, strength: float) -> int:
    """Index of the first timestep img2img runs: N - floor(N * strength) (x scheduler.order)."""
    if not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(
            f"strength must be a number in [0, 1] (0 = keep the image, 1 = ignore it), got {strength!r}"
        )
    n_run = min(int(steps * strength), steps)
    if n_run == 0:
        raise ValueError(
            f"strength {strength} with {steps} steps runs no step at all; raise steps or strength"
        )
    return steps - n_run


def _image_latents(
    pipe: StableDiffusionPipeline, image: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    check_image(image)
    if image.shape[-1] % pipe.vae_scale_factor or image.shape[-2] % pipe.vae_scale_factor:
        raise ValueError(
            f"image sides must be multiples of {pipe.vae_scale_factor}, got {tuple(image.shape[-2:])}"
        )
    return encode(
        pipe.vae, image, sample=True, generator=generator
    )  # a posterior sample, as diffusers


@torch.no_grad()
def img2img(
    pipe: StableDiffusionPipeline,
    image: torch.Tensor,
    prompt: str | Sequence[str],
    *,
    strength: float = 0.8,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    negative_prompt: str | Sequence[str] | None = None,
    scheduler: SchedulerMixin | None = None,
) -> Generation:
    """SDEdit with the hand-written loop; equals StableDiffusionImg2ImgPipeline for the same
    components, seed and arguments (tests/test_editing.py)."""
    first = start_step(steps, strength)
    setup = prepare(
        pipe,
        prompt,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        negative_prompt=negative_prompt,
        scheduler=scheduler,
    )
    scheduler, n = setup.scheduler, len(setup.prompts)
    timesteps = scheduler.timesteps[first * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first * scheduler.order)
    z_image = _image_latents(pipe, image, setup.generator)
    if z_image.shape[0] != n:
        z_image = z_image.expand(n, -1, -1, -1)
    noise = torch.randn(z_image.shape, generator=setup.generator).to(z_image)
    latents = scheduler.add_noise(z_image, noise, timesteps[:1].repeat(n))
    latents = denoise(pipe, latents, timesteps, setup.guidance, scheduler, setup.generator)
    return Generation(decode(pipe.vae, latents, value_range="unit"), latents, None, None)


def latent_mask(mask: torch.Tensor, image: torch.Tensor, factor: int) -> torch.Tensor:
    """A pixel mask (H, W) or (B, 1, H, W), 1 = regenerate, to latent resolution (max-pooled, so
    any latent cell that touches the masked region is regenerated)."""
    m = torch.as_tensor(mask, dtype=torch.float32)
    m = m[None, None] if m.ndim == 2 else m
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"mask must be (H, W) or (B, 1, H, W) with the image's size {tuple(image.shape[-2:])}, got {tuple(m.shape)}"
        )
    if ((m != 0) & (m != 1)).any():
        raise ValueError("mask values must be 0 (keep) or 1 (regenerate)")
    return F.max_pool2d(m, factor)


@torch.no_grad()
def inpaint(
    pipe: StableDiffusionPipeline,
    image: torch.Tensor,
    mask: torch.Tensor,
    prompt: str | Sequence[str],
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    negative_prompt: str | Sequence[str] | None = None,
    scheduler: SchedulerMixin | None = None,
    overlay: bool = True,
    feather: float = 0.0,
    resample: int = 0,
) -> Generation:
    """Regenerate the masked region of `image` (1 in `mask`) to follow `prompt`, keeping the rest.
    With the defaults but `overlay=False` this equals diffusers' StableDiffusionInpaintPipeline
    with a plain 4-channel U-Net (tests/test_editing.py). The known latents are exact; decoding
    still shifts far-away pixels a little (GroupNorm and attention in the decoder are global), so
    `overlay` pastes the input's pixels back outside the mask (diffusers does so only when called
    with `padding_mask_crop`). `feather`: the standard deviation, in latent cells, of a Gaussian
    blur of the latent mask (a soft seam). `resample`: RePaint's extra jumps back per step
    (`denoise`), so the new region can agree with the known one."""
    if not isinstance(feather, (int, float)) or not 0 <= feather <= 8:
        raise ValueError(f"feather must be a number of latent cells in [0, 8], got {feather!r}")
    setup = prepare(
        pipe,
        prompt,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        negative_prompt=negative_prompt,
        scheduler=scheduler,
    )
    scheduler, timesteps = setup.scheduler, setup.scheduler.timesteps
    z_image = _image_latents(pipe, image, setup.generator).expand(len(setup.prompts), -1, -1, -1)
    m = latent_mask(mask, image, pipe.vae_scale_factor)
    m = _feathered(m, feather) if feather else m
    m = m.to(z_image)
    noise = torch.randn(z_image.shape, generator=setup.generator).to(z_image)
    latents = noise * scheduler.init_noise_sigma

    def blend(i: int, t: torch.Tensor, out: Any):
        known = (
            scheduler.add_noise(z_image, noise, timesteps[i + 1 : i + 2])
            if i + 1 < len(timesteps)
            else z_image
        )
        return m * out.prev_sample + (1 - m) * known

    latents = denoise(
        pipe,
        latents,
        timesteps,
        setup.guidance,
        scheduler,
        setup.generator,
        on_step=blend,
        resample=resample,
    )
    images = decode(pipe.vae, latents, value_range="unit")
    if overlay:  # the decoder's GroupNorm/attention see the whole latent: paste known pixels back
        m_px = torch.as_tensor(mask, dtype=torch.float32).reshape(-1, 1, *images.shape[-2:])
        images = m_px * images + (1 - m_px) * to_unit_range(image.float().cpu())
    return Generation(images, latents, None, None)


def _feathered(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """A (B, 1, h, w) 0/1 mask blurred by a Gaussian of std `sigma` (edges replicated)."""
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    m = F.pad(m, (radius,) * 4, mode="replicate")
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    return F.conv2d(m, k.view(1, 1, -1, 1)).clamp(0, 1)


@torch.no_grad()
def prompt_switch(
    pipe: StableDiffusionPipeline,
    prompt_a: str,
    prompt_b: str,
    switch_at: float,
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
) -> Generation:
    """Follow prompt_a for the first `switch_at` fraction of the steps, then prompt_b. At 0 this
    is prompt_b's picture, at 1 prompt_a's; in between the two compete (notebook 07)."""
    if not 0 <= switch_at <= 1:
        raise ValueError(f"switch_at must be in [0, 1], got {switch_at}")
    setup = prepare(pipe, prompt_a, steps=steps, guidance_scale=guidance_scale, seed=seed)
    emb_b, _ = encode_prompt(pipe, [prompt_b])
    scheduler, emb_a = setup.scheduler, setup.guidance.text_emb
    latents = initial_latents(
        pipe, 1, setup.height, setup.width, setup.generator, scheduler.init_noise_sigma
    )
    n_a = round(switch_at * len(scheduler.timesteps))
    latents = denoise(
        pipe,
        latents,
        scheduler.timesteps,
        setup.guidance,
        scheduler,
        setup.generator,
        text_emb_at=lambda i: emb_a if i < n_a else emb_b,
    )
    return Generation(decode(pipe.vae, latents, value_range="unit"), latents, None, None)
