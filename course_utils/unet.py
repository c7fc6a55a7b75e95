"""The U-Net opened (taught in notebooks/08_unet_inside.ipynb): its timestep features, and a
cross-attention processor that records the attention maps, or replays recorded ones.

Sources: Ronneberger et al. 2015 (U-Net: an encoder, a decoder, skip connections between them);
Vaswani et al. 2017 (scaled dot-product attention, sinusoidal features); Wu & He 2018 (GroupNorm);
Hertz et al. 2022 (prompt-to-prompt: re-use the cross-attention maps to edit one word).
Everything goes through diffusers' attention-processor API (`unet.set_attn_processor`): no
library internals are patched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention


def timestep_features(
    t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, shift: float = 0.0
) -> torch.Tensor:
    """Sinusoidal features of timesteps (Vaswani et al. 2017, Sec. 3.5; Ho et al. 2020, App. B):
    freq_i = 10000^(-i / (dim/2 - shift)), i = 0 .. dim/2 - 1, features [cos(t freq), sin(t freq)]
    (SD's order, flip_sin_to_cos=True). = diffusers' `Timesteps` (unet.time_proj). t: (B,)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    t = torch.as_tensor(t, dtype=torch.float32).flatten()
    i = torch.arange(dim // 2, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * i / (dim // 2 - shift))
    angles = t[:, None] * freqs[None]
    sin, cos = angles.sin(), angles.cos()
    return torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)


class AttentionStore:
    """What the `MapProcessor`s of one U-Net share. Always: every cross-attention call's
    probabilities (the conditional half of a guided batch, averaged over heads, resized to
    `size`) are added to a running sum per token (`maps()`); `keep`: also keep each call's full probabilities, in call
    order, on the CPU (for a replay); `replay`: a list of kept probabilities that replace the conditional
    half's for the first `len(replay)` calls (prompt-to-prompt's word swap); `per_head`: also sum
    each layer's maps per head at the layer's own resolution, in `head_sums[layer]`
    (B, heads, 77, h, w) (a head's map means nothing averaged with another layer's)."""

    def __init__(self, size: int, guided: bool = True, keep: bool = False, per_head: bool = False):
        self.size, self.guided, self.keep, self.per_head = size, guided, keep, per_head
        self.sum: torch.Tensor | None = None  # (B, 77, size, size)
        self.head_sums: dict[str, torch.Tensor] = {}
        self.calls = 0
        self.kept: list[torch.Tensor] = []
        self.replay: list[torch.Tensor] | None = None

    def maps(self) -> torch.Tensor:
        """The mean map of every token, (B, 77, size, size): averaged over heads, layers, steps."""
        if self.sum is None:
            raise RuntimeError("no cross-attention was recorded: run the U-Net inside `recording`")
        return self.sum / self.calls

    def observe(self, probs: torch.Tensor, batch: int, heads: int, layer: str = "") -> torch.Tensor:
        """probs: (batch * heads, pixels, tokens) of one call of `layer`; returns the
        probabilities to use."""
        cond = slice(batch // 2, batch) if self.guided and batch > 1 else slice(0, batch)
        p = probs.view(batch, heads, *probs.shape[1:])
        if self.replay is not None and self.calls < len(self.replay):
            p = p.clone()
            p[cond] = self.replay[self.calls].to(p)
        if self.keep:  # kept on the CPU: SD 1.5's maps of a few prompts would fill a GPU
            self.kept.append(p[cond].detach().to("cpu", copy=True))
        side = math.isqrt(p.shape[2])
        if self.per_head:
            h = p[cond].float().transpose(2, 3).reshape(*p[cond].shape[:2], p.shape[3], side, side)
            self.head_sums[layer] = h + self.head_sums.get(layer, 0)
        m = p[cond].float().mean(1).transpose(1, 2).reshape(-1, p.shape[3], side, side)
        m = F.interpolate(m, size=(self.size, self.size), mode="bilinear", align_corners=False)
        self.sum = m if self.sum is None else self.sum + m
        self.calls += 1
        return p.view_as(probs)


class MapProcessor:
    """diffusers' `AttnProcessor` for a transformer block's attention (3-D hidden states, no
    spatial or group norm), with the probabilities handed to an `AttentionStore` between the
    softmax and the product with the values:  softmax(Q K^T / sqrt(d)) V  (Vaswani et al. Eq. 1)."""

    def __init__(self, store: AttentionStore, layer: str = ""):
        self.store, self.layer = store, layer

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """One attention call: Q from the pixels, K and V from the text (or the pixels)."""
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("MapProcessor handles a transformer block's attention only")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch = hidden_states.shape[0]
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = self.store.observe(
            attn.get_attention_scores(q, k, mask), batch, attn.heads, self.layer
        )
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def recording(unet: UNet2DConditionModel, store: AttentionStore) -> Iterator[AttentionStore]:
    """Install a `MapProcessor` in every cross-attention layer (`attn2`) for the duration of the
    block; the self-attention layers and the original processors are restored afterwards."""
    before = unet.attn_processors
    unet.set_attn_processor(
        {
            name: MapProcessor(store, name.split(".processor")[0]) if ".attn2." in name else p
            for name, p in before.items()
        }
    )
    try:
        yield store
    finally:
        unet.set_attn_processor(before)
