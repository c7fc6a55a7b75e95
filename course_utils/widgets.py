"""Live controls for lectures (ipywidgets). Every callback is a plain function that returns what
the widget shows, so tests call it without a browser; `*_panel` wires it to sliders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from course_utils import flow

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from ipywidgets import interactive
    from PIL import Image


def generate_image(
    pipe: StableDiffusionPipeline,
    prompt: str,
    guidance_scale: float = 7.5,
    steps: int = 20,
    seed: int = 0,
) -> Image.Image:
    """The 06 control panel's callback: one picture (PIL) for the current settings."""
    from course_utils.sampling import generate

    return generate(
        pipe, prompt, steps=int(steps), guidance_scale=float(guidance_scale), seed=int(seed)
    ).pil()[0]


def flow_state(
    scheduler: flow.DiffusionScheduler, z1: torch.Tensor, t: float, seed: int = 0
) -> dict:
    """The 05 t-slider's callback: alpha, beta, their derivatives and x_t = alpha z1 + beta eps."""
    eps = torch.randn(z1.shape, generator=torch.Generator().manual_seed(seed)).to(z1)
    tt = torch.tensor(float(t))
    a, b = scheduler.alpha(tt), scheduler.beta(tt)
    return dict(
        t=float(t),
        k=int(scheduler.model_input(tt)),
        alpha=float(a),
        beta=float(b),
        alpha_dot=float(scheduler.alpha_dot(tt)),
        beta_dot=float(scheduler.beta_dot(tt)),
        x_t=a.to(z1) * z1 + b.to(z1) * eps,
    )


def scaled_channel(z: torch.Tensor, channel: int, scale: float) -> torch.Tensor:
    """The 03 slider's callback: the latent with one channel multiplied by `scale`."""
    if not 0 <= channel < z.shape[1]:
        raise ValueError(f"channel must be in [0, {z.shape[1] - 1}], got {channel}")
    out = z.clone()
    out[:, channel] *= scale
    return out


def generate_panel(
    pipe: StableDiffusionPipeline, prompt: str = "a red circle on a blue background"
) -> interactive:
    """Prompt, guidance, steps and seed controls that regenerate the picture."""
    import ipywidgets as w

    return w.interactive(
        lambda prompt, guidance_scale, steps, seed: generate_image(pipe, prompt, guidance_scale, steps, seed),
        {"manual": True, "manual_name": "generate"},
        prompt=w.Text(prompt), guidance_scale=w.FloatSlider(value=7.5, min=0, max=15, step=0.5),
        steps=w.IntSlider(value=20, min=1, max=50), seed=w.IntText(0),
    )  # fmt: skip


def flow_panel(
    scheduler: flow.DiffusionScheduler, vae: AutoencoderKL, z1: torch.Tensor
) -> interactive:
    """A t-slider: alpha, beta, their derivatives, and the decoded noisy latent x_t."""
    import ipywidgets as w
    from IPython.display import display

    from course_utils.images import decode, to_pil

    def show(t: float):
        s = flow_state(scheduler, z1, t)
        print(
            f"t={s['t']:.2f}  k={s['k']}  alpha={s['alpha']:.3f}  beta={s['beta']:.3f}  alpha_dot={s['alpha_dot']:.3f}  beta_dot={s['beta_dot']:.3f}"
        )
        display(to_pil(decode(vae, s["x_t"]))[0].resize((192, 192)))

    return w.interactive(
        show, t=w.FloatSlider(value=0.5, min=0, max=1, step=0.01, continuous_update=False)
    )


def channel_panel(vae: AutoencoderKL, z: torch.Tensor) -> interactive:
    """A slider per latent channel scale: what each of the 4 channels does to the decoded picture."""
    import ipywidgets as w
    from IPython.display import display

    from course_utils.images import decode, to_pil

    def show(channel: int, scale: float):
        display(to_pil(decode(vae, scaled_channel(z, channel, scale)))[0].resize((192, 192)))

    return w.interactive(
        show,
        channel=w.IntSlider(value=0, min=0, max=z.shape[1] - 1),
        scale=w.FloatSlider(value=1.0, min=-2, max=3, step=0.25, continuous_update=False),
    )
