"""Check functions for the notebooks' exercises. Each computes the right answer independently
(with transformers / diffusers / closed forms), compares, and prints a verdict — never the answer."""

from __future__ import annotations

import torch

from course_utils.check import exercise
from course_utils.tokenization import clip_tokenizer


def check_token_count(prompt: str, answer: int) -> None:
    """Ex 1.1: how many ids (start and end token included) does CLIP give `prompt`?"""
    exercise("token count", answer, len(clip_tokenizer()(prompt).input_ids))


def check_first_merge(word: str, answer: tuple[str, str]) -> None:
    """Ex 1.2: which pair does BPE merge first in `word` (symbols as in the byte table)?"""
    from course_utils.tokenization import SimpleCLIPTokenizer

    steps = SimpleCLIPTokenizer().bpe_steps(word)
    exercise("first merge", tuple(answer) == steps[0].pair if steps else answer is None, True)


def check_truncated_words(prompt: str, answer: int) -> None:
    """Ex 1.3: how many BPE tokens of `prompt` does SD's 77-token limit drop?"""
    n = len(clip_tokenizer()(prompt, verbose=False).input_ids)  # counting, on purpose untruncated
    exercise("tokens dropped", answer, max(0, n - 77))


def check_compression_factor(
    answer: float,
    image_shape: tuple[int, int, int] = (3, 512, 512),
    latent_shape: tuple[int, int, int] = (4, 64, 64),
) -> None:
    """Ex 3.1: how many image numbers per latent number?"""
    exercise(
        "compression factor",
        answer,
        torch.tensor(image_shape).prod() / torch.tensor(latent_shape).prod(),
        atol=1e-6,
    )


def check_alpha_bar(t: int, answer: float) -> None:
    """Ex 4.1: alpha_bar_t of SD's schedule, to 4 decimals."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    exercise(f"alpha_bar_{t}", answer, sched.alphas_cumprod[t].item(), atol=5e-5)


def check_snr_half(answer: int) -> None:
    """Ex 4.2: the first timestep t at which the signal-to-noise ratio alpha_bar/(1-alpha_bar) < 1."""
    from diffusers import DDPMScheduler

    ab = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    ).alphas_cumprod
    exercise("SNR crosses 1 at t", answer, int(torch.nonzero(ab / (1 - ab) < 1)[0]))


def check_velocity(
    answer: torch.Tensor, x_data: torch.Tensor, x_noise: torch.Tensor, t: float
) -> None:
    """Ex 5.1: the OT flow's velocity at time t for the pair (x_noise at t = 0, x_data at t = 1):
    x_t = t x_data + (1 - t) x_noise, so u = x_data - x_noise (Lipman et al. 2023, Eq. 23)."""
    exercise("OT velocity", answer, x_data - x_noise, atol=1e-5)


def check_cfg(
    answer: torch.Tensor, eps_u: torch.Tensor, eps_c: torch.Tensor, guidance_scale: float
) -> None:
    """Ex 6.1: classifier-free guidance from the two predictions."""
    exercise("guided eps", answer, eps_u + guidance_scale * (eps_c - eps_u), atol=1e-5)
