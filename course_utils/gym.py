"""A small gym-style environment: a base model that samples, a reward that scores.

    env = make("images/stable_diffusion", "images/red", discretization_steps=20)
    out = env.sample(8, generator=torch.Generator().manual_seed(0))
    out.images, out.latents, out.trajectory, out.rewards

The base model is an epsilon-predicting diffusion model seen through the flow schedule of
notebook 05 (t = 0 noise, t = 1 data): `forward(x, t)` is the U-Net's epsilon at
k = model_input(t), with classifier-free guidance eps_u + g (eps_c - eps_u), g = guidance_scale
as in diffusers and notebook 06 (diffusiongym writes (w + 1) eps_c - w eps_u, w = g - 1). `Environment.sample`
integrates the flow with Euler steps (flow.epsilon_to_velocity), decodes, and scores.
Taught in notebooks/06_unet_cfg_reward.ipynb.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from course_utils import flow
from course_utils.images import decode

# Reward guidance back-propagates through the decoder this many samples at a time: on a GPU one
# image's graph through SD 1.5's decoder at 512^2 keeps 2.8 GiB (course_utils.meter), so a batch
# of 16 would need 45 GiB; 2 at a time fits a 16 GB card. The gradients are the same.
GRAD_CHUNK = 2

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline


class Registry:
    """Ids -> classes with default keyword arguments. `register(id, **defaults)` is a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[Callable, dict[str, Any]]] = {}

    def register(self, id: str, **defaults) -> Callable[[type], type]:
        """A class decorator that registers the class under `id` with default keyword arguments."""
        if not isinstance(id, str) or "/" not in id:
            raise ValueError(f"{self.kind} ids look like 'domain/name', got {id!r}")
        if id in self._entries:
            raise ValueError(f"{self.kind} {id!r} is registered already")

        def decorator(cls: type):
            self._entries[id] = (cls, defaults)
            return cls

        return decorator

    def ids(self) -> list[str]:
        """The registered ids, sorted."""
        return sorted(self._entries)

    def __contains__(self, id: str) -> bool:
        return id in self._entries

    def __getitem__(self, id: str) -> tuple[Callable, dict[str, Any]]:
        if id not in self._entries:
            raise KeyError(
                f"unknown {self.kind} {id!r}; registered: {', '.join(self.ids()) or 'none'}"
            )
        return self._entries[id]

    def make(self, id: str, **kwargs) -> Any:
        """An instance of the class registered as `id`, its defaults updated by `kwargs`."""
        cls, defaults = self[id]
        return cls(**{**defaults, **kwargs})


base_model_registry = Registry("base model")
reward_registry = Registry("reward")


class BaseModel(torch.nn.Module):
    """A generative model that maps noise at t = 0 to data at t = 1 along `self.scheduler`."""

    output_type = "epsilon"  # what forward() predicts
    scheduler: flow.DiffusionScheduler

    def sample_p0(
        self, n: int, generator: torch.Generator | None = None, **kw
    ) -> tuple[torch.Tensor, dict]:
        """n draws of the t = 0 distribution and the conditioning that forward() needs."""
        raise NotImplementedError

    def preprocess(self, **kw) -> dict:
        """Turn user inputs (e.g. prompts) into the model's conditioning (e.g. embeddings)."""
        return kw

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> images (B, 3, H, W) in [0, 1]."""
        return x


class Reward:
    """r(images) -> (reward (B,), valid (B,) bool). Higher is better; invalid samples are NaN/inf."""

    def __call__(self, images: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """Score (B, 3, H, W) images in [0, 1]: (reward (B,), valid (B,) bool)."""
        raise NotImplementedError


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"rewards take images as a (B, 3, H, W) tensor in [0, 1], got {shape}")
    return images


@reward_registry.register("images/red")
class RedReward(Reward):
    """r = mean of the red channel, in [0, 1]. Naive on purpose: white (1, 1, 1) scores 1 too
    (notebook 06 shows the model finding that out)."""

    def __call__(self, images: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """r = mean red channel, valid where finite."""
        images = _check_images(images)
        r = images[:, 0].mean(dim=(1, 2))
        return r, torch.isfinite(r)


@reward_registry.register("images/redness")
class RednessReward(Reward):
    """r = mean over pixels of R - (G + B) / 2, in [-1, 1]: red scores 1, white and gray 0,
    cyan -1. The fix for the gamed "images/red"."""

    def __call__(self, images: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """r = mean of R - (G + B) / 2, valid where finite."""
        images = _check_images(images)
        r = (images[:, 0] - (images[:, 1] + images[:, 2]) / 2).mean(dim=(1, 2))
        return r, torch.isfinite(r)


@reward_registry.register("images/compressibility", quality=95)
class CompressibilityReward(Reward):
    """r = -(bytes of the image saved as a JPEG at `quality`) / 1000, the kB a picture costs
    (Black et al. 2024, "DDPO", Sec. 6.1): flat pictures score high, noise low. Computed by PIL on
    rounded uint8 pixels, so it has no gradient: only methods that need reward *values* can use it
    (notebook 10)."""

    def __init__(self, quality: int = 95):
        if not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be an integer in 1 ... 100, got {quality!r}")
        self.quality = quality

    def __call__(self, images: torch.Tensor, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """r = -kB of each image as a JPEG; valid where the image is finite."""
        import io

        from PIL import Image

        images = _check_images(images).detach().float().cpu()
        valid = torch.isfinite(images).flatten(1).all(1)
        pixels = (images.nan_to_num(0).clamp(0, 1) * 255).round().to(torch.uint8)
        sizes = []
        for arr in pixels.permute(0, 2, 3, 1).numpy():
            buffer = io.BytesIO()
            Image.fromarray(arr).save(buffer, format="JPEG", quality=self.quality)
            sizes.append(buffer.tell())
        return -torch.tensor(sizes, dtype=torch.float32) / 1000, valid


@base_model_registry.register(
    "images/stable_diffusion", prompt="a red circle on a white background", guidance_scale=7.5
)
class StableDiffusionBaseModel(BaseModel):
    """Whichever pipeline `load_pipeline` gives (mini-sd on a CPU, SD 1.5 on a GPU), as a flow."""

    def __init__(
        self,
        pipe: StableDiffusionPipeline | None = None,
        prompt: str = "",
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        model: str = "auto",
        device: str | torch.device | None = None,
    ):
        super().__init__()
        if pipe is None:
            from course_utils.models import load_pipeline

            pipe = load_pipeline(model, device=device)
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self.pipe, self.prompt, self.negative_prompt = pipe, prompt, negative_prompt
        self.guidance_scale = guidance_scale  # g: eps_u + g (eps_c - eps_u)
        self.scheduler = flow.DiffusionScheduler(pipe.scheduler.alphas_cumprod)

    @property
    def device(self) -> torch.device:
        """The pipeline's device."""
        return self.pipe.device

    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, side, side) of one latent, read from the U-Net's config."""
        c, s = self.pipe.unet.config.in_channels, self.pipe.unet.config.sample_size
        return (c, s, s)

    def preprocess(
        self,
        prompts: str | Sequence[str] | None = None,
        negative_prompts: str | Sequence[str] | None = None,
        n: int = 1,
    ) -> dict:
        """Prompts (default: the model's prompt, n times) -> text_emb and uncond_emb (B, 77, d)."""
        from course_utils.sampling import encode_prompt

        prompts = prompts if prompts is not None else [self.prompt] * n
        negative = negative_prompts if negative_prompts is not None else self.negative_prompt
        text_emb, uncond_emb = encode_prompt(self.pipe, prompts, negative)
        return dict(text_emb=text_emb, uncond_emb=uncond_emb)

    def sample_p0(
        self,
        n: int,
        generator: torch.Generator | None = None,
        prompts: str | Sequence[str] | None = None,
        negative_prompts: str | Sequence[str] | None = None,
        **kw,
    ) -> tuple[torch.Tensor, dict]:
        """n latents of N(0, I) at t = 0 (drawn on `generator`, the CPU's by default, in the
        U-Net's dtype) and the embeddings of their prompts."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for n = {n} samples")
        x = torch.randn((n, *self.latent_shape()), generator=generator, dtype=self.pipe.unet.dtype)
        return x.to(self.device), self.preprocess(prompts, negative_prompts, n=n)

    def forward(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor,
        text_emb: torch.Tensor,
        uncond_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps at (x, t): the U-Net at timestep k(t), guided as eps_u + g (eps_c - eps_u)
        (Ho & Salimans 2022, Eq. 6, whose w is g - 1); one conditional call when g = 1."""
        k = self.scheduler.model_input(t).to(self.device)
        k = k.expand(x.shape[0]) if k.ndim == 0 else k
        if self.guidance_scale == 1 or uncond_emb is None:
            return self.pipe.unet(x, k, encoder_hidden_states=text_emb).sample
        eps_u, eps_c = self.pipe.unet(
            torch.cat([x, x]),
            torch.cat([k, k]),
            encoder_hidden_states=torch.cat([uncond_emb, text_emb]),
        ).sample.chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], on the model's device, keeping the autograd graph (the
        reward's gradient flows back through the decoder in reward guidance)."""
        return decode(self.pipe.vae, x, value_range="unit", keep_grad=True)


class Sample(NamedTuple):
    """What Environment.sample returns."""

    images: torch.Tensor  # (n, 3, H, W) in [0, 1]
    latents: torch.Tensor  # x at t = 1
    trajectory: torch.Tensor  # (steps + 1, n, ...) from t = 0 to t = 1
    rewards: torch.Tensor  # (n,), times reward_scale
    valid: torch.Tensor  # (n,) bool


class Environment:
    """A base model, a reward and a time grid: sample(n) -> images, latents, trajectory, rewards."""

    def __init__(
        self,
        base_model: BaseModel,
        reward: Reward,
        discretization_steps: int,
        reward_scale: float = 1.0,
    ):
        if not isinstance(discretization_steps, int) or discretization_steps < 1:
            raise ValueError(
                f"discretization_steps must be an integer >= 1, got {discretization_steps!r}"
            )
        self.base_model, self.reward = base_model, reward
        self.steps, self.reward_scale = discretization_steps, reward_scale

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, reward_guidance: float = 0.0, **cond
    ) -> torch.Tensor:
        """u(x, t) from the base model's epsilon (flow.epsilon_to_velocity), plus, if
        `reward_guidance` > 0, that many normalised reward gradients (see reward_direction)."""
        eps = self.base_model(x, t, **cond)
        u = flow.epsilon_to_velocity(x, eps, t, self.base_model.scheduler)
        if reward_guidance:
            u = u + reward_guidance * self.reward_direction(x, eps, t)
        return u

    def reward_direction(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad r(postprocess(x_data_pred)) w.r.t. x_data_pred = (x - beta_t eps) / alpha_t, divided by its
        standard deviation per sample (so a guidance scale is in units of the latent's spread)."""
        sch = self.base_model.scheduler
        x_data_pred = (x - sch.beta(t).to(x) * eps) / sch.alpha(t).to(x)
        grads = []
        with torch.enable_grad():  # GRAD_CHUNK samples a graph: each reward needs its image only
            for chunk in x_data_pred.detach().split(GRAD_CHUNK):
                chunk.requires_grad_(True)
                reward = self.reward(self.base_model.postprocess(chunk))[0].sum()
                grads.append(torch.autograd.grad(reward, chunk)[0])
        grad = torch.cat(grads)
        return grad / grad.flatten(1).std(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, reward_guidance: float = 0.0, **kw
    ) -> Sample:
        """n samples: Euler on the flow from t = 0 to 1, decoded and scored. `reward_guidance` > 0
        adds the reward's gradient to every step (notebook 06, 6.7)."""
        x_noise, cond = self.base_model.sample_p0(n, generator=generator, **kw)
        x_data, traj = flow.euler_sample(
            lambda x, t: self.velocity(x, t, reward_guidance, **cond), x_noise, self.steps
        )
        images = self.base_model.postprocess(x_data).float().cpu()
        r, valid = self.reward(images)
        return Sample(images, x_data, torch.stack(traj), self.reward_scale * r, valid)


def make(
    base_model: str,
    reward: str,
    discretization_steps: int,
    reward_scale: float = 1.0,
    device: str | torch.device | None = None,
    base_model_kwargs: dict | None = None,
    reward_kwargs: dict | None = None,
) -> Environment:
    """Build an Environment from registered ids; both must be in the same domain ("images/...")."""
    domains = base_model.split("/")[0], reward.split("/")[0]
    if domains[0] != domains[1]:
        raise ValueError(
            f"base model {base_model!r} and reward {reward!r} are in different domains ({domains[0]} vs {domains[1]})"
        )
    model_kwargs = dict(base_model_kwargs or {})
    if device is not None:
        model_kwargs["device"] = device
    model = base_model_registry.make(base_model, **model_kwargs)
    return Environment(
        model,
        reward_registry.make(reward, **(reward_kwargs or {})),
        discretization_steps,
        reward_scale,
    )


def reward_guided_sample(
    env: Environment, n: int, scale: float = 1.0, generator: torch.Generator | None = None, **kw
) -> Sample:
    """Reward-gradient guidance (notebook 06, section 6.7): Euler on the flow plus the reward's
    gradient at the predicted clean latent, x <- x + dt (u(x, t) + scale * grad / std(grad)) —
    the gradient of a differentiable reward through the decoder at x^_data, as in universal
    guidance (Bansal et al. 2023, "forward guidance") and DPS (Chung et al. 2023, Alg. 1). Too large a scale
    over-optimises: the reward rises while the prompt is forgotten (notebook 06)."""
    return env.sample(n, generator=generator, reward_guidance=scale, **kw)
