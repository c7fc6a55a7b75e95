"""course_utils.unet against diffusers' own modules: timestep features, attention maps, replay."""

import pytest
import torch

from course_utils import unet as U
from course_utils.sampling import encode_prompt


def test_timestep_features_equal_the_unets_time_proj(tiny_pipe):
    t = torch.tensor([0, 1, 250, 999])
    cfg = tiny_pipe.unet.config
    ours = U.timestep_features(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
    assert torch.allclose(ours, tiny_pipe.unet.time_proj(t), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        U.timestep_features(t, 7)


def _unet_call(pipe, prompts, seed=0):
    text, uncond = encode_prompt(pipe, prompts)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), 4, 8, 8, generator=g)
    return pipe.unet(torch.cat([x, x]), 500, encoder_hidden_states=torch.cat([uncond, text])).sample


def test_recording_changes_nothing_and_maps_are_distributions(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)
    with torch.no_grad():
        plain = _unet_call(tiny_pipe, ["a red circle"])
        with U.recording(tiny_pipe.unet, U.AttentionStore(size=8)) as store:
            recorded = _unet_call(tiny_pipe, ["a red circle"])
    assert torch.allclose(recorded, plain, atol=1e-5)
    maps = store.maps()
    n_cross = sum(".attn2." in name for name in before)
    assert store.calls == n_cross and maps.shape == (1, 77, 8, 8)
    assert torch.allclose(maps.sum(1), torch.ones(1, 8, 8), atol=1e-4)  # softmax over tokens
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == {
        k: type(v) for k, v in before.items()
    }


def test_replaying_maps_keeps_them_and_changes_the_output(tiny_pipe):
    with torch.no_grad():
        with U.recording(tiny_pipe.unet, U.AttentionStore(size=8, keep=True)) as red:
            _unet_call(tiny_pipe, ["a red circle"])
        blue = _unet_call(tiny_pipe, ["a blue circle"])
        replay = U.AttentionStore(size=8, keep=True)
        replay.replay = red.kept
        with U.recording(tiny_pipe.unet, replay):
            edited = _unet_call(tiny_pipe, ["a blue circle"])
        with U.recording(tiny_pipe.unet, U.AttentionStore(size=8)) as own:
            own.replay = [k.clone() for k in red.kept]
            again = _unet_call(tiny_pipe, ["a red circle"])
    assert all(torch.equal(a, b) for a, b in zip(replay.kept, red.kept))  # the maps were replaced
    assert not torch.allclose(edited, blue, atol=1e-4)  # ... and they matter
    assert torch.allclose(again, _unet_call(tiny_pipe, ["a red circle"]), atol=1e-5)


def test_per_head_sums_are_distributions_per_layer(tiny_pipe):
    with torch.no_grad(), U.recording(tiny_pipe.unet, U.AttentionStore(8, per_head=True)) as s:
        _unet_call(tiny_pipe, ["a red circle"])
        _unet_call(tiny_pipe, ["a red circle"], seed=1)  # two calls of every layer
    layers = [n.split(".processor")[0] for n in tiny_pipe.unet.attn_processors if ".attn2." in n]
    assert sorted(s.head_sums) == sorted(layers)
    for h in s.head_sums.values():  # (B, heads, 77, h, w), each pixel's weights sum to 1 per call
        assert h.shape[:3] == (1, h.shape[1], 77)
        assert torch.allclose(h.sum(2), torch.full_like(h.sum(2), 2.0), atol=1e-4)
