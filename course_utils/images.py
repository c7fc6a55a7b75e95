"""Pictures in and out of the VAE (taught in 03_vae_roundtrip).

SD's VAE works on (B, 3, H, W) tensors in [-1, 1] with H, W multiples of 8; its latents are
(B, 4, H/8, W/8) and are multiplied by `vae.config.scaling_factor` before the U-Net sees them
(0.18215 for SD 1.5 — always read it from the config, mini-sd's differs).

One image-range convention, two named converters:
    "signed"  [-1, 1]   what the VAE reads and writes (to_tensor, encode, decode's default)
    "unit"    [0, 1]    what is shown and scored: grids, rewards, the judge, Generation.images
    to_unit_range(x) = (x + 1) / 2 clamped,   to_signed_range(x) = 2 x - 1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


def to_tensor(image: Any, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """PIL image or (H, W[, C]) uint8 array -> (1, 3, H, W) float in [-1, 1].

    RGBA is composited on white, grayscale is repeated to 3 channels. `size` resizes (an int
    gives a square; a centre crop keeps the aspect). Without `size`, a side that is not a multiple
    of 8 is an error: SD's VAE needs multiples of 8, and we never resize silently."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"arrays must be uint8 (0..255), got {image.dtype}; convert or use a PIL image"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_tensor takes a PIL image or a uint8 array, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert("RGB")
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        scale = max(w / image.width, h / image.height)
        image = image.resize(
            (max(w, round(image.width * scale)), max(h, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
        left, top = (image.width - w) // 2, (image.height - h) // 2
        image = image.crop((left, top, left + w, top + h))
    if image.width % 8 or image.height % 8:
        raise ValueError(
            f"image is {image.width}x{image.height}; SD's VAE needs sides that are multiples of 8. Pass size=(H, W), e.g. size={8 * max(1, round(image.height / 8))}"
        )
    arr = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()
    return (arr / 127.5 - 1).unsqueeze(0)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (the VAE's range) -> [0, 1] (display and rewards): x / 2 + 0.5, clamped."""
    return (x / 2 + 0.5).clamp(0, 1)


def to_signed_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]: 2 x - 1 (what `encode` and the editing helpers take)."""
    return x * 2 - 1


def check_image(image: Any, name: str = "image") -> torch.Tensor:
    """A clear error for an image the VAE would silently misread: not (B, 3, H, W), not finite,
    or outside [-1, 1] (a 0..255 image, say). Returns the image unchanged."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            f"{name} must be an RGB tensor (B, 3, H, W) in [-1, 1] (see images.to_tensor), got {got}"
        )
    if not torch.isfinite(image).all():
        raise ValueError(f"{name} holds NaN or inf values: fix the image before encoding it")
    lo, hi = image.min().item(), image.max().item()
    if lo < -1.5 or hi > 1.5:  # resampling may overshoot [-1, 1] a little; 0..255 is far out
        hint = " (it looks like 0..255: use images.to_tensor, or x / 127.5 - 1)" if hi > 2 else ""
        raise ValueError(f"{name} must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
    return image


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) or (3, H, W) in [-1, 1] -> PIL images (clamped, rounded)."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"to_pil takes (B, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
    arr = (
        ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5)
        .round()
        .byte()
        .permute(0, 2, 3, 1)
        .numpy()
    )
    return [Image.fromarray(a) for a in arr]


@torch.no_grad()
def encode(
    vae: AutoencoderKL,
    x: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x in [-1, 1] -> *scaled* latents z = scaling_factor * E(x) (the posterior mean, or a sample)."""
    dist = vae.encode(check_image(x).to(vae.device, vae.dtype)).latent_dist
    z = dist.sample(generator=generator) if sample else dist.mean
    return z * vae.config.scaling_factor


def decode(
    vae: AutoencoderKL, z: torch.Tensor, value_range: str = "signed", keep_grad: bool = False
) -> torch.Tensor:
    """Scaled latents -> images: x = D(z / scaling_factor) (the autoencoder of latent diffusion,
    Rombach et al. 2022, Sec. 3; notebook 03), in [-1, 1] ("signed") or [0, 1]
    ("unit", as diffusers' pipelines return them: the range is changed in the model's dtype,
    then cast, exactly as `VaeImageProcessor.postprocess`). float32 on the CPU.

    The one decode of the course. In fp16 SD's decoder can overflow to inf/NaN (a black
    image): then it decodes once more with the VAE upcast to float32. `keep_grad=True` keeps
    the autograd graph (reward guidance, notebook 06; DRaFT, 10) and the device: no fallback,
    no copy. In float16 the gradient that flows back through the decoder is then multiplied by
    GRAD_SCALE on the way in and divided on the way out (static loss scaling, Micikevicius et
    al. 2018, Sec. 3.2): a reward's gradient per pixel is about 1 / (B H W 3), 5e-7 for 8
    pictures of 512², and most of it would round to 0 in float16 (smallest subnormal 6e-8)."""
    if value_range not in ("signed", "unit"):
        raise ValueError(
            f"value_range must be 'signed' ([-1, 1]) or 'unit' ([0, 1]), got {value_range!r}"
        )
    z, s = z.to(vae.device), vae.config.scaling_factor
    scaled = keep_grad and torch.is_grad_enabled() and vae.dtype == torch.float16
    with torch.set_grad_enabled(keep_grad and torch.is_grad_enabled()):
        if scaled:
            z = _ScaleGradient.apply(z.float(), 1 / GRAD_SCALE)
        x = vae.decode(z.to(vae.dtype) / s).sample
        if scaled:  # in float32 before the scale, so that the incoming gradient is scaled first
            x = _ScaleGradient.apply(x.float(), GRAD_SCALE)
        if not keep_grad and vae.dtype != torch.float32 and not torch.isfinite(x).all():
            x = _decode_in_float32(vae, z.float() / s)
        x = x.clamp(-1, 1) if value_range == "signed" else to_unit_range(x)
    return x if keep_grad else x.float().cpu()


GRAD_SCALE = 2.0**12  # 5e-7 * 4096 = 2e-3: far above float16's underflow, far below its 65504


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; backward multiplies the gradient by `scale`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad * ctx.scale, None


def _decode_in_float32(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    from diffusers.utils import logging as dlogging

    dtype, level = vae.dtype, dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # casting with .to() is what we mean here
    try:
        vae.to(torch.float32)
        return vae.decode(z).sample
    finally:
        vae.to(dtype)
        dlogging.set_verbosity(level)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(range^2 / MSE); range 2 for [-1, 1] images."""
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError(f"psnr takes two tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(
            f"psnr compares images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    mse = torch.mean((x.float().cpu() - y.float().cpu()) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)
