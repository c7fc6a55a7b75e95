"""Architectures: the same classes as Stable Diffusion 1.5, at three sizes.

    "tiny"        randomly initialised, for unit tests (built in seconds, ~8 MB)
    "mini"        the embedded mini-sd that `make train-mini` trains (64x64 images, 4x8x8 latents)
    "sd15-small"  SD 1.5's classes at sizes unlike mini-sd's (text width 48, 96x96 images,
                  4x12x12 latents, three U-Net levels): the stand-in for SD 1.5 that CI runs
                  every notebook on, with random weights (tests/test_notebook_runs.py)
    "sd15"        Stable Diffusion 1.5's own configs (for GPU timings with random weights, no download)

The scheduler is SD 1.5's: PNDM over the scaled-linear betas 0.00085 -> 0.012, 1000 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig

SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
    prediction_type="epsilon", timestep_spacing="leading", trained_betas=None,
)  # fmt: skip

ARCHS: dict[str, dict] = {
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vae=dict(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8),
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8,
                  norm_num_groups=8),
        image_size=64,
    ),
    "mini": dict(
        text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4),
        vae=dict(block_out_channels=[32, 64, 64, 64], layers_per_block=1, norm_num_groups=16),
        unet=dict(block_out_channels=(64, 128), layers_per_block=1, attention_head_dim=16,
                  norm_num_groups=32),
        image_size=64,
    ),
    "sd15-small": dict(
        text=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                  hidden_act="quick_gelu"),
        vae=dict(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8),
        unet=dict(block_out_channels=(32, 48, 64), layers_per_block=1, attention_head_dim=8,
                  norm_num_groups=8),
        image_size=96,
    ),
    "sd15": dict(
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, hidden_act="quick_gelu"),
        vae=dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32),
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  attention_head_dim=8, norm_num_groups=32),
        image_size=512,
    ),
}  # fmt: skip


def text_config(arch: str) -> CLIPTextConfig:
    """The `CLIPTextConfig` of an architecture: CLIP's vocabulary and 77 positions, its widths."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=ARCHS[arch]["text"]["hidden_size"],
        **ARCHS[arch]["text"],
    )  # fmt: skip


def build_vae(arch: str) -> AutoencoderKL:
    """A randomly initialised `AutoencoderKL`: x8 down-sampling (4 blocks), 4 latent channels."""
    from diffusers import AutoencoderKL

    n = len(ARCHS[arch]["vae"]["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=ARCHS[arch]["image_size"],
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        **ARCHS[arch]["vae"],
    )  # fmt: skip


def build_unet(arch: str) -> UNet2DConditionModel:
    """A randomly initialised `UNet2DConditionModel` with SD 1.5's block types, cross-attending
    to text embeddings of the architecture's width."""
    from diffusers import UNet2DConditionModel

    cfg = ARCHS[arch]["unet"]
    n = len(cfg["block_out_channels"])
    down = ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"]
    return UNet2DConditionModel(
        sample_size=ARCHS[arch]["image_size"] // 8, in_channels=4, out_channels=4,
        down_block_types=down, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
        cross_attention_dim=ARCHS[arch]["text"]["hidden_size"], **cfg,
    )  # fmt: skip


def build_random_pipeline(
    arch: str = "tiny", seed: int = 0, tokenizer_dir: str | Path | None = None
) -> StableDiffusionPipeline:
    """A `StableDiffusionPipeline` of the given size with random weights and CLIP's real
    tokenizer. Used by tests (tiny), as mini-sd's starting point, and for GPU timings (sd15)."""
    from course_utils._quiet import quiet_torchvision_hint

    quiet_torchvision_hint()
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from course_utils.tokenization import TOKENIZER_DIR, clip_tokenizer

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    tok = Path(tokenizer_dir or TOKENIZER_DIR)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config(arch)).eval()
    vae, unet = build_vae(arch).eval(), build_unet(arch).eval()
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, unet=unet, scheduler=PNDMScheduler.from_config(SD_SCHEDULER),
        tokenizer=clip_tokenizer(tok),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
