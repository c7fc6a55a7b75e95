"""Pictures in and out of the VAE (taught in 03_vae_roundtrip).

SD's VAE works on (B, 3, H, W) tensors in [-1, 1] with H, W multiples of 8; its latents are
(B, 4, H/8, W/8) and are multiplied by `vae.config.scaling_factor` before the U-Net sees them
(0.18215 for SD 1.5 — always read it from the config, mini-sd's differs).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
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
    vae, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x in [-1, 1] -> *scaled* latents z = scaling_factor * E(x) (the posterior mean, or a sample)."""
    dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
    z = dist.sample(generator=generator) if sample else dist.mean
    return z * vae.config.scaling_factor


@torch.no_grad()
def decode(vae, z: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1]: D(z / scaling_factor), float32 on the CPU."""
    return (
        vae.decode(z.to(vae.device, vae.dtype) / vae.config.scaling_factor)
        .sample.float()
        .cpu()
        .clamp(-1, 1)
    )


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(range^2 / MSE); range 2 for [-1, 1] images."""
    mse = torch.mean((x.float().cpu() - y.float().cpu()) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)
