"""The text-to-image loop of Stable Diffusion, written out (taught in 06_unet_cfg_reward).

    text_emb  = CLIP(tokens(prompt)),  uncond_emb = CLIP(tokens(negative_prompt or ""))
    z_T       ~ N(0, I) * scheduler.init_noise_sigma            (4 x H/8 x W/8, seeded on the CPU)
    for t in scheduler.timesteps:
        eps_u, eps_c = unet([z_t, z_t], t, [uncond_emb, text_emb])  (one batched call)
        eps = eps_u + g (eps_c - eps_u),  g = guidance_scale       (Ho & Salimans 2022, Eq. 6)
        z_t = scheduler.step(eps, t, z_t)
    image = vae.decode(z_0 / scaling_factor)  in [-1, 1] -> [0, 1]

`generate(...)` equals `StableDiffusionPipeline.__call__` for the same components, scheduler,
seed, prompt, guidance, steps and size (tests/test_sampling.py: max |diff| <= 1e-4 in fp32).
As in diffusers, guidance_scale <= 1 skips the unconditional pass.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from course_utils.images import decode

if TYPE_CHECKING:
    from diffusers import SchedulerMixin, StableDiffusionPipeline


def as_prompt_list(prompts: str | Sequence[str], name: str = "prompt") -> list[str]:
    """A prompt or a list of prompts as a non-empty list of strings (a clear error otherwise)."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or isinstance(prompts, bytes):
        raise TypeError(
            f"{name} must be a string or a list of strings, got {type(prompts).__name__}"
        )
    if len(prompts) == 0:
        raise ValueError(f"{name} is an empty list: give at least one prompt")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(
            f"every {name} must be a string, got {type(bad[0]).__name__}: {bad[0]!r:.60}"
        )
    return list(prompts)


def token_ids(pipe: StableDiffusionPipeline, prompts: Sequence[str]) -> torch.Tensor:
    """(B, 77) token ids of `prompts`, padded and truncated to the tokenizer's 77 as the pipeline does."""
    tok = pipe.tokenizer
    return tok(
        list(prompts),
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def embed_text(pipe: StableDiffusionPipeline, prompts: list[str]) -> torch.Tensor:
    """CLIP's last_hidden_state of prompts padded/truncated to 77 tokens: (B, 77, d), in the
    U-Net's dtype (the one who reads it; a text encoder trained in float32 may sit beside a
    float16 U-Net, notebook 11)."""
    ids = token_ids(pipe, prompts)
    return pipe.text_encoder(ids.to(pipe.device))[0].to(pipe.unet.dtype)


def encode_prompt(
    pipe: StableDiffusionPipeline,
    prompts: str | Sequence[str],
    negative_prompts: str | Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(text_emb, uncond_emb), each (B, 77, d). The unconditional embedding is that of
    `negative_prompts` (a string or one per prompt), or of the empty prompt "" by default."""
    prompts = as_prompt_list(prompts)
    if negative_prompts is None:
        negatives = [""] * len(prompts)
    else:
        negatives = as_prompt_list(negative_prompts, "negative_prompt")
        if len(negatives) == 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
    return embed_text(pipe, prompts), embed_text(pipe, negatives)


class Generation(NamedTuple):
    """What `generate` and the editing helpers return."""

    images: torch.Tensor  # (B, 3, H, W) in [0, 1], float32 on the CPU
    latents: torch.Tensor  # final latents z_0 (B, 4, H/8, W/8), as the U-Net sees them
    trajectory: list[torch.Tensor] | None  # latents after each step (return_trajectory=True)
    x0_preds: list[torch.Tensor] | None  # the scheduler's x^_0 after each step, if it gives one

    def pil(self) -> list:
        """The images as PIL images (what pipe(...).images gives)."""
        from PIL import Image

        arr = (self.images.permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")
        return [Image.fromarray(a) for a in arr]


class Guidance(NamedTuple):
    """What classifier-free guidance needs at every step (Ho & Salimans 2022, Eq. 6)."""

    text_emb: torch.Tensor  # (B, 77, d): the prompts
    uncond_emb: torch.Tensor  # (B, 77, d): "" or the negative prompts
    guidance_scale: float  # g: eps = eps_u + g (eps_c - eps_u); g <= 1 means no guidance


def check_generate_args(
    pipe: StableDiffusionPipeline,
    steps: int,
    guidance_scale: float,
    height: int | None,
    width: int | None,
    seed: int = 0,
) -> tuple[int, int]:
    """Clear errors for the arguments people get wrong; returns (height, width), the model's
    default size (unet.config.sample_size x vae_scale_factor) where None is given."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if (
        not isinstance(guidance_scale, numbers.Real)
        or isinstance(guidance_scale, bool)
        or not math.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise ValueError(
            f"guidance_scale must be a number >= 0, not NaN or inf (1 = no guidance, 7.5 = SD's default), got {guidance_scale!r}"
        )
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    factor = pipe.vae_scale_factor
    default = pipe.unet.config.sample_size * factor
    height, width = (default if v is None else v for v in (height, width))
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % factor:
            raise ValueError(
                f"{name} must be a positive multiple of {factor} (the VAE downsamples by {factor}), got {v!r}"
            )
    return height, width


class Setup(NamedTuple):
    """What every loop of the course starts from (generate, img2img, inpaint, prompt_switch)."""

    prompts: list[str]
    guidance: Guidance
    scheduler: object  # a diffusers scheduler, its timesteps set
    generator: torch.Generator  # on the CPU, seeded: the same noise on any device
    height: int
    width: int


def prepare(
    pipe: StableDiffusionPipeline,
    prompt: str | Sequence[str],
    *,
    steps: int,
    guidance_scale: float,
    seed: int,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    scheduler: SchedulerMixin | None = None,
) -> Setup:
    """Check the arguments, embed the prompts, seed a CPU generator and set the scheduler's
    timesteps (first: init_noise_sigma may depend on them). `scheduler` replaces
    pipe.scheduler for this call (it is stateful: set_timesteps resets it)."""
    prompts = as_prompt_list(prompt)
    height, width = check_generate_args(pipe, steps, guidance_scale, height, width, seed)
    scheduler = scheduler or pipe.scheduler
    text_emb, uncond_emb = encode_prompt(pipe, prompts, negative_prompt)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    scheduler.set_timesteps(steps, device=pipe.device)
    guidance = Guidance(text_emb, uncond_emb, float(guidance_scale))
    return Setup(prompts, guidance, scheduler, generator, height, width)


def initial_latents(
    pipe: StableDiffusionPipeline,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    init_noise_sigma: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """z_T ~ N(0, I) * init_noise_sigma (a scheduler's `init_noise_sigma`), drawn on the
    generator's device (the CPU by default, so a seed gives the same picture on any device)."""
    shape = (
        batch,
        pipe.unet.config.in_channels,
        height // pipe.vae_scale_factor,
        width // pipe.vae_scale_factor,
    )
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=pipe.unet.dtype)
    return z.to(pipe.device) * init_noise_sigma


def guided_eps(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    t: int | torch.Tensor,
    guidance: Guidance,
    scheduler: SchedulerMixin | None,
) -> torch.Tensor:
    """eps = eps_u + g (eps_c - eps_u)  (Ho & Salimans 2022, Eq. 6), one U-Net call on the
    doubled batch (none doubled when g <= 1, as in diffusers). The U-Net sees
    `scheduler.scale_model_input(latents, t)`, or `latents` as given when scheduler is None
    (the samplers of 09 scale their input themselves)."""
    text_emb, uncond_emb, g = guidance
    cfg = g > 1
    x = torch.cat([latents, latents]) if cfg else latents
    x = x if scheduler is None else scheduler.scale_model_input(x, t)
    emb = torch.cat([uncond_emb, text_emb]) if cfg else text_emb
    eps = pipe.unet(x, t, encoder_hidden_states=emb).sample
    if not cfg:
        return eps
    eps_u, eps_c = eps.chunk(2)
    return eps_u + g * (eps_c - eps_u)


def denoise(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    guidance: Guidance,
    scheduler: SchedulerMixin,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    on_step: Callable | None = None,
    text_emb_at: Callable[[int], torch.Tensor] | None = None,
    resample: int = 0,
) -> torch.Tensor:
    """The loop itself: guided eps, then `scheduler.step`, for each timestep. `on_step(i, t, out)`
    sees each step's scheduler output and may return replacement latents (inpainting);
    `text_emb_at(i)` may change the prompt part-way (prompt editing). `resample` > 0 is RePaint's
    resampling (Lugmayr et al. 2022, Alg. 1 with jump length 1): after every step but the last,
    noise the result back up to t with q(x_t | x_s) = N(sqrt(ab_t / ab_s) x_s, (1 - ab_t / ab_s) I)
    and take the step again, `resample` more times (stateless DDIM/DDPM schedulers only)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if not isinstance(resample, int) or resample < 0:
        raise ValueError(f"resample must be an integer >= 0, got {resample!r}")
    if resample and not isinstance(scheduler, (DDIMScheduler, DDPMScheduler)):
        raise ValueError(
            f"resample repeats steps, which only stateless schedulers allow (DDIMScheduler, "
            f"DDPMScheduler); got {type(scheduler).__name__}: pass scheduler=DDIMScheduler.from_config(...)"
        )
    params = inspect.signature(scheduler.step).parameters
    step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}
    ab = scheduler.alphas_cumprod.to(latents.device) if resample else None
    for i, t in enumerate(timesteps):
        g = guidance if text_emb_at is None else guidance._replace(text_emb=text_emb_at(i))
        for repeat in range(resample + 1 if i + 1 < len(timesteps) else 1):
            if repeat:  # back up from the next timestep to t with fresh noise
                a = ab[t] / ab[timesteps[i + 1]]
                z = torch.randn(latents.shape, generator=generator).to(latents)
                latents = (a**0.5 * latents.float() + (1 - a) ** 0.5 * z.float()).to(latents.dtype)
            eps = guided_eps(pipe, latents, t, g, scheduler)
            out = scheduler.step(eps, t, latents, **step_kwargs)
            latents = out.prev_sample
            if on_step is not None:
                replaced = on_step(i, t, out)
                latents = latents if replaced is None else replaced
    return latents


@torch.no_grad()
def generate(
    pipe: StableDiffusionPipeline,
    prompt: str | Sequence[str],
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    scheduler: SchedulerMixin | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    return_trajectory: bool = False,
    eta: float = 0.0,
) -> Generation:
    """Text to image with classifier-free guidance, the loop written out (module docstring).
    `scheduler` replaces pipe.scheduler for this call (it is stateful: set_timesteps resets it).
    `callback(i, t, latents)` runs after every step."""
    setup = prepare(
        pipe,
        prompt,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        height=height,
        width=width,
        negative_prompt=negative_prompt,
        scheduler=scheduler,
    )
    scheduler = setup.scheduler
    latents = initial_latents(
        pipe,
        len(setup.prompts),
        setup.height,
        setup.width,
        setup.generator,
        scheduler.init_noise_sigma,
    )
    trajectory, x0_preds = ([], []) if return_trajectory else (None, None)

    def record(i: int, t: int | torch.Tensor, out: Any):
        if return_trajectory:
            trajectory.append(out.prev_sample.cpu())
            x0 = getattr(out, "pred_original_sample", None)
            x0_preds.append(x0.cpu() if x0 is not None else None)
        if callback is not None:
            callback(i, t, out.prev_sample)

    latents = denoise(
        pipe,
        latents,
        scheduler.timesteps,
        setup.guidance,
        scheduler,
        setup.generator,
        eta,
        on_step=record,
    )
    images = decode(pipe.vae, latents, value_range="unit")
    return Generation(images, latents, trajectory, x0_preds)
