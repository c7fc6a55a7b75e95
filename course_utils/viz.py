"""Small plotting helpers: image grids, latent channels, schedules, a denoising strip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _to_hwc(img: Any) -> np.ndarray:
    """PIL image, (3, H, W) tensor in [0, 1] or (H, W, 3) array -> (H, W, 3) array for imshow."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu()
        return (
            img.permute(1, 2, 0).clamp(0, 1).numpy()
            if img.ndim == 3 and img.shape[0] in (1, 3)
            else img.numpy()
        )
    return np.asarray(img)


def grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 1.6,
    suptitle: str | None = None,
) -> Figure:
    """Show images in a grid (tensors in [0, 1], PIL images or arrays); returns the figure."""
    images = list(images)
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if titles else 0)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(_to_hwc(img), interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def latent_channels(z: torch.Tensor, title: str = "latent channels", size: float = 1.6) -> Figure:
    """The channels of one latent (c, h, w) side by side on one colour scale centred at 0
    (red positive, blue negative, white 0) with a colour bar, so channels compare by eye."""
    z = z.detach().float().cpu()
    z = z[0] if z.ndim == 4 else z
    limit = z.abs().max().item() or 1.0
    fig, axes = plt.subplots(
        1, z.shape[0], figsize=(size * z.shape[0] + 0.8, size + 0.4), layout="constrained"
    )
    for c, ax in enumerate(np.atleast_1d(axes)):
        image = ax.imshow(z[c].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit,
                          interpolation="nearest")  # fmt: skip
        ax.set_title(f"ch {c}: std {z[c].std():.2f}", fontsize=8)
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.85, label="value")
    fig.suptitle(title, fontsize=10)
    return fig


def curves(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logy: bool = False,
    logx: bool = False,
    orders: Sequence[int] = (),
    size: tuple[float, float] = (5, 3),
) -> Figure:
    """Several named curves over the same x; returns the figure. `orders`: dashed reference
    lines C x^-p for each p, through the first curve's first point (a solver of order p falls
    parallel to its line on log-log axes)."""
    fig, ax = plt.subplots(figsize=size)
    x = np.asarray(x, dtype=float)
    for j, (name, y) in enumerate(ys.items()):  # thinner lines on top: equal curves stay visible
        style = dict(marker="os^D"[j % 4], ms=4, lw=max(3.0 - j, 1.0)) if orders else {}
        ax.plot(x, np.asarray(y), label=name, **style)
    first = float(np.asarray(next(iter(ys.values())))[0]) if ys else 1.0
    for p in orders:
        ax.plot(x, first * (x / x[0]) ** -p, "k--", lw=0.8, alpha=0.6, label=f"slope -{p}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def denoising_strip(
    images: Sequence, steps: Sequence[int], title: str = "denoising, step by step"
) -> Figure:
    """A row of images labelled by step: the picture emerging from the noise."""
    return grid(images, titles=[f"step {s}" for s in steps], suptitle=title)


def reward_comparison(
    results: dict[str, tuple[torch.Tensor, torch.Tensor]],
    xlabel: str = "reward",
    n_shown: int = 6,
    bins: int = 14,
) -> Figure:
    """Samplers side by side: `results` maps a name to (images (B, 3, H, W) in [0, 1], rewards
    (B,)). Left, the reward histograms on shared bins; right, each sampler's first `n_shown`
    images in one labelled row."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw=dict(width_ratios=[1, 2]))
    every = torch.cat([r.float().cpu() for _, r in results.values()])
    span = (every.min().item(), every.max().item() + 1e-6)
    for name, (_, r) in results.items():
        axes[0].hist(r.float().cpu().numpy(), bins=bins, range=span, alpha=0.5, label=name)
    n = len(next(iter(results.values()))[1])
    axes[0].set(xlabel=xlabel, title=f"reward distributions ({n} samples each)")
    axes[0].legend(fontsize=8)
    rows = [imgs[:n_shown].float().cpu() for imgs, _ in results.values()]
    axes[1].imshow(
        torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1).permute(1, 2, 0).clamp(0, 1)
    )
    side = rows[0].shape[-2]
    axes[1].set_yticks([side // 2 + side * i for i in range(len(rows))], list(results))
    axes[1].set_xticks([])
    fig.tight_layout()
    return fig


def progress(iterable: Any, desc: str, total: int | None = None) -> Any:
    """A tqdm bar over `iterable` while a loop runs, gone when it ends: in a notebook the cell's
    output is cleared at the end (so print after the loop), and no stuck bar is saved with it."""
    from tqdm.auto import tqdm

    bar = tqdm(iterable, desc=desc, total=total, leave=False)
    yield from bar
    bar.close()
    try:
        from IPython import get_ipython
        from IPython.display import clear_output
    except ImportError:
        return
    if get_ipython() is not None:
        clear_output()
