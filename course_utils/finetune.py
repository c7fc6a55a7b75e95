"""Changing the weights: LoRA adapters and reward fine-tuning (taught in 10_reward_finetuning).

LoRA (Hu et al. 2022):  W x  ->  W x + (alpha / r) B A x,  A (r x d_in), B (d_out x r), B = 0 at
                        the start; only A and B train. Added with diffusers' `unet.add_adapter`
                        (a peft `LoraConfig`), saved by `save_lora_weights`, loaded by
                        `pipe.load_lora_weights`: the files a user loads into SD 1.5.
DRaFT-K (Clark et al. 2024, Alg. 1 with truncation K): sample with the environment's Euler
                        steps, keep the autograd graph for the last K only, decode, and
                        ascend the reward's gradient: loss = -mean r(decode(x_1)).
RWR (Peng et al. 2019; Lee et al. 2023): rounds of sampling the model, then the ordinary
                        denoising loss on those samples, each weighted by w_i = B softmax(r /
                        beta)_i: needs reward *values* only, so any reward works, JPEG size too.
The regulariser:        lambda mean (eps_theta(x_t, t) - eps_ref(x_t, t))^2 at a point of the
                        trajectory, eps_ref the frozen base model (the adapter switched off):
                        a KL-style leash to the base model (Fan et al. 2023, "DPOK", Sec. 4.2).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from course_utils.gym import Environment

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # every attention projection of the U-Net


def add_lora(
    unet: UNet2DConditionModel,
    rank: int = 8,
    alpha: float | None = None,
    targets: Sequence[str] = LORA_TARGETS,
    seed: int = 0,
) -> list[torch.nn.Parameter]:
    """Freeze `unet` and add a rank-`rank` LoRA adapter to the `targets` projections (diffusers'
    `add_adapter` with a peft `LoraConfig`; A Gaussian, B = 0, so the model starts unchanged).
    alpha defaults to rank (scale alpha / r = 1). Returns the adapter's trainable parameters."""
    from peft import LoraConfig

    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    unet.requires_grad_(False)
    torch.manual_seed(seed)  # peft draws A from the global generator
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    unet.add_adapter(config)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # train the adapter in float32 even in a half-precision U-Net
        p.data = p.data.float()
    return params


def save_lora(pipe: StableDiffusionPipeline, folder: str | Path) -> Path:
    """Save the U-Net's LoRA adapter in diffusers' format (`pytorch_lora_weights.safetensors`,
    keys as diffusers' training scripts write them, with the LoraConfig as metadata so that an
    alpha other than the rank survives); `pipe.load_lora_weights(folder)` reads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    if not getattr(pipe.unet, "peft_config", None):
        raise ValueError("the U-Net has no LoRA adapter to save: call add_lora(pipe.unet) first")
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    folder = Path(folder)
    metadata = pipe.unet.peft_config["default"].to_dict()  # rank and alpha travel with the file
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=layers, unet_lora_adapter_metadata=metadata
    )
    return folder / "pytorch_lora_weights.safetensors"


def load_lora(pipe: StableDiffusionPipeline, folder: str | Path) -> None:
    """`pipe.load_lora_weights(folder)`, without diffusers' notice that the file has no text-encoder
    layers (save_lora writes the U-Net's only, on purpose)."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        pipe.load_lora_weights(folder)
    finally:
        dlogging.set_verbosity(level)


@contextlib.contextmanager
def adapter_off(unet: UNet2DConditionModel) -> Iterator[None]:
    """The frozen base model for the duration of a `with` block (the adapter switched off)."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


class Step(NamedTuple):
    """One fine-tuning step's batch: what the loss was made from."""

    loss: torch.Tensor  # the scalar to backpropagate
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], detached, on the CPU
    rewards: torch.Tensor  # (B,), the reward of each image (times the env's reward_scale)


def _check_weight(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def regulariser(env: Environment, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """mean (eps_theta(x, t) - eps_ref(x, t))^2 over every element: how far the adapted model's
    noise prediction has moved from the frozen base model's at (x, t)."""
    model = env.base_model
    eps = model(x, t, **cond)
    with torch.no_grad(), adapter_off(model.pipe.unet):
        eps_ref = model(x, t, **cond)
    return (eps.float() - eps_ref.float()).pow(2).mean()


def draft_step(
    env: Environment,
    n: int,
    k: int = 1,
    generator: torch.Generator | None = None,
    kl_weight: float = 0.0,
    **sample_kw: object,
) -> Step:
    """DRaFT-K: n samples with the environment's Euler steps on the flow, the graph kept for the
    last `k` steps only (x enters them detached), decoded with the graph, scored:
    loss = -mean r + kl_weight * regulariser at a random earlier state of the trajectory."""
    if not isinstance(k, int) or not 1 <= k <= env.steps:
        raise ValueError(f"k must be an integer in 1 ... {env.steps} (the env's steps), got {k!r}")
    kl_weight = _check_weight("kl_weight", kl_weight)
    x, cond = env.base_model.sample_p0(n, generator=generator, **sample_kw)
    ts = torch.linspace(0, 1, env.steps + 1)
    states = []
    for i in range(env.steps):
        with torch.set_grad_enabled(i >= env.steps - k):
            states.append(x.detach())
            x = x + (ts[i + 1] - ts[i]).item() * env.velocity(x, ts[i], **cond)
    images = env.base_model.postprocess(x)
    rewards, _ = env.reward(images)
    rewards = env.reward_scale * rewards.to(x.device)
    loss = -rewards.mean()
    if kl_weight:
        j = int(torch.randint(env.steps, (1,), generator=generator))
        loss = loss + kl_weight * regulariser(env, states[j], ts[j], cond)
    return Step(loss, images.detach().float().cpu(), rewards.detach().float().cpu())


def reward_weights(rewards: torch.Tensor, temperature: float) -> torch.Tensor:
    """w_i = B softmax(r / beta)_i: mean 1, the best samples weigh most; beta -> inf gives plain
    fine-tuning on the model's own samples, beta -> 0 the best sample only."""
    temperature = _check_weight("temperature", temperature)
    if temperature == 0:
        raise ValueError("temperature must be > 0 (it divides the rewards)")
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf: drop invalid samples before weighting")
    return len(r) * torch.softmax(r / temperature, dim=0)


def weighted_denoising_loss(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text_emb: torch.Tensor,
    weights: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """mean_i w_i |eps_i - eps_theta(sqrt(ab_t) z_i + sqrt(1 - ab_t) eps_i, t_i)|^2 / (4 h w),
    t_i uniform in 0 ... T - 1 (Ho et al. 2020, Alg. 1 weighted per sample): the RWR loss."""
    b = latents.shape[0]
    if weights.shape != (b,):
        raise ValueError(f"need one weight per latent: {tuple(weights.shape)} for {b} latents")
    t = torch.randint(len(alphas_cumprod), (b,), generator=generator)
    eps = torch.randn(latents.shape, generator=generator)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1).float()
    z_t = ab.sqrt() * latents.detach().float().cpu() + (1 - ab).sqrt() * eps
    dev, dtype = unet.device, unet.dtype
    pred = unet(z_t.to(dev, dtype), t.to(dev), encoder_hidden_states=text_emb.to(dev)).sample
    per_sample = (pred.float() - eps.to(dev)).pow(2).flatten(1).mean(1)
    return (weights.to(dev) * per_sample).mean()


def rwr_round(
    env: Environment,
    n: int,
    optimizer: torch.optim.Optimizer,
    inner_steps: int,
    batch: int = 16,
    temperature: float = 0.05,
    generator: torch.Generator | None = None,
    steps: int = 20,
) -> Step:
    """One round of reward-weighted regression: n pictures of the env's prompt from the current
    model, drawn with the pipeline's own scheduler (`sampling.generate`, `steps` steps, the env's
    guidance; the env's flow-Euler latents sit off the data at 20 steps, notebook 10), scored by
    the env's reward (any reward: only its values are used), weights w = reward_weights(r,
    temperature), then `inner_steps` optimizer steps of `weighted_denoising_loss` on random
    batches of those latents. Returns the last loss (detached), the images and the rewards."""
    from course_utils.sampling import generate

    for name, value in (("n", n), ("inner_steps", inner_steps), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    model = env.base_model
    seed = int(torch.randint(2**31, (1,), generator=generator))
    with torch.no_grad():
        out = generate(
            model.pipe,
            [model.prompt] * n,
            steps=steps,
            guidance_scale=model.guidance_scale,
            seed=seed,
        )
    rewards, valid = env.reward(out.images)
    if not valid.all():
        raise ValueError(f"{int((~valid).sum())} of {n} samples have no valid reward")
    rewards = env.reward_scale * rewards.float().cpu()
    weights = reward_weights(rewards, temperature)
    text_emb = model.preprocess(n=batch)["text_emb"]
    for _ in range(inner_steps):
        idx = torch.randint(n, (batch,), generator=generator)
        loss = weighted_denoising_loss(
            model.pipe.unet,
            out.latents[idx],
            text_emb,
            weights[idx],
            model.pipe.scheduler.alphas_cumprod,
            generator,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Step(loss.detach(), out.images, rewards)


def pairwise_distance(images: torch.Tensor) -> torch.Tensor:
    """Mean |x_i - x_j| over pixels for every pair i < j of a batch (B, ...): (B (B - 1) / 2,).
    Its mean over seeds of one prompt measures diversity (0: every seed gives the same picture)."""
    flat = images.detach().float().flatten(1)
    if len(flat) < 2:
        raise ValueError("diversity needs at least two images")
    d = torch.cdist(flat, flat, p=1) / flat.shape[1]
    i, j = torch.triu_indices(len(flat), len(flat), offset=1)
    return d[i, j]
