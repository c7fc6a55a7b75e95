"""course_utils.meter: what it records from a pipeline, and how it converts calls to SD 1.5."""

from __future__ import annotations

import pytest
import torch

from course_utils import meter
from course_utils.models import load_pipeline


@pytest.fixture
def metered(tiny_pipe_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(meter.ENV, str(tmp_path))
    monkeypatch.setenv(meter.ENV_NOTEBOOK, "nb")
    pipe = load_pipeline(str(tiny_pipe_dir), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe, tmp_path / "nb.jsonl"


def test_a_guided_generation_is_recorded_call_by_call(metered):
    from diffusers import DDIMScheduler

    pipe, log = metered
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # one U-Net call a step
    pipe(["a", "b"], num_inference_steps=2, guidance_scale=7.5, output_type="pt")
    records = meter.read(log)
    unet = [r for r in records if r["part"] == "unet"]
    side = pipe.unet.config.sample_size
    assert [r["batch"] for r in unet] == [4, 4]  # two steps, guidance doubles the batch of 2
    assert all(r["side"] == r["native"] == side and not r["grad"] for r in unet)
    assert [r["batch"] for r in records if r["part"] == "vae.decoder"] == [2]
    assert {r["part"] for r in records} == {"text_encoder", "unet", "vae.decoder"}
    assert all(r["live"]["unet"] == 1 for r in unet)


def test_a_graph_stays_open_until_it_is_back_propagated(metered):
    pipe, log = metered
    side = pipe.unet.config.sample_size
    emb = torch.zeros(1, 77, pipe.text_encoder.config.hidden_size)
    z = torch.randn(1, 4, side, side, requires_grad=True)
    with torch.no_grad():
        pipe.unet(z.detach(), 1, encoder_hidden_states=emb)
    image = pipe.vae.decode(z).sample  # builds a graph
    with torch.no_grad():
        pipe.unet(z.detach(), 1, encoder_hidden_states=emb)  # while it is open
    image.mean().backward()
    with torch.no_grad():
        pipe.unet(z.detach(), 1, encoder_hidden_states=emb)  # after the backward pass
    unet = [r for r in meter.read(log) if r["part"] == "unet"]
    decoder = next(r for r in meter.read(log) if r["part"] == "vae.decoder")
    assert decoder["grad"] and [r["open"] for r in unet] == [[], [["vae.decoder", 1, side]], []]


def test_the_t4_time_of_a_guided_step_is_diffusers_benchmark():
    """One U-Net call on a guidance batch of 2 at 64x64 is one 'it' of diffusers' T4 benchmark
    (6.9 it/s); a batch of 8 is one 'it' of its batch-4 table (1.79 it/s)."""
    assert meter.call_seconds_t4("unet", 2, 64, False) == pytest.approx(1 / 6.9)
    assert meter.call_seconds_t4("unet", 8, 64, False) == pytest.approx(1 / 1.79, rel=0.02)


def test_sd15_weights_are_sd15s_parameter_counts():
    """SD 1.5's U-Net has 859,520,964 parameters and its CLIP ViT-L/14 text encoder 123,060,480
    (the counts of runwayml/stable-diffusion-v1-5's safetensors); float16 takes 2 bytes each."""
    assert meter.weight_bytes("unet") == 2 * 859_520_964
    assert meter.weight_bytes("text_encoder") == 2 * 123_060_480


def test_the_table_is_the_code_and_linear_in_the_batch():
    """The committed table is what `measure_call` measures now, and a batch it was not measured
    at (3) is its linear prediction."""
    for batch in (1, 3):
        measured = meter.measure_call("vae.encoder", batch, False)
        predicted = meter.call_cost("vae.encoder", batch, 64, False)
        for key in ("peak", "flops"):
            assert predicted[key] == pytest.approx(measured[key], rel=0.02), (batch, key)


def test_estimate_counts_weights_open_graphs_and_the_call():
    side = 8
    record = dict(part="unet", batch=2, side=side, native=side, grad=False,
                  live={"unet": 1, "vae.encoder": 1, "vae.decoder": 1, "text_encoder": 1},
                  open=[["vae.decoder", 1, side]])  # fmt: skip
    est = meter.estimate([record])
    weights = sum(meter.weight_bytes(p) for p in meter.PARTS)
    graph = meter.call_cost("vae.decoder", 1, 64, True)["kept"]
    call = meter.call_cost("unet", 2, 64, False)["peak"]
    assert est["peak_gib"] * meter.GiB == pytest.approx(weights + graph + call)
    assert est["t4_minutes"] * 60 == pytest.approx(1 / 6.9) and est["calls"] == 1


def test_the_vae_is_sliced_one_image_at_a_time_as_load_pipeline_does_on_a_gpu():
    side, live = 8, {"unet": 0, "vae.encoder": 0, "vae.decoder": 1, "text_encoder": 0}
    record = dict(part="vae.decoder", batch=16, side=side, native=side, grad=False, live=live,
                  open=[])  # fmt: skip
    one_image = meter.call_cost("vae.decoder", 1, 64, False)["peak"]
    expected = meter.weight_bytes("vae.decoder") + one_image
    assert meter.estimate([record])["peak_gib"] * meter.GiB == pytest.approx(expected)


def test_the_report_flags_a_header_that_states_other_figures(tmp_path):
    """A notebook's first cell states its SD 1.5 cost; make test's table says when the meter
    measured other figures (here one U-Net call, not 06's whole run)."""
    import json

    live = {"unet": 1, "vae.encoder": 0, "vae.decoder": 0, "text_encoder": 0}
    record = dict(part="unet", batch=2, side=8, native=8, grad=False, live=live, open=[])
    (tmp_path / "06_unet_cfg_reward.jsonl").write_text(json.dumps(record) + "\n")
    (row,) = meter.report(tmp_path)[2:]
    assert row.startswith("| 06 | 1 |") and "its header says" in row


def test_a_notebook_over_the_memory_budget_is_named(tmp_path):
    """make test fails on it (conftest.py): 8 pictures back-propagated through SD 1.5's decoder
    at once keep 8 x 2.8 GiB; 2 at a time (gym.GRAD_CHUNK) fit."""
    import json

    live = {"unet": 1, "vae.encoder": 0, "vae.decoder": 1, "text_encoder": 1}
    for name, batch in (("10_reward_finetuning", 8), ("06_unet_cfg_reward", 2)):
        record = dict(part="vae.decoder", batch=batch, side=8, native=8, grad=True, live=live,
                      open=[["unet", 2, 8]], cell=7)  # fmt: skip
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    (line,) = meter.over_memory(tmp_path)
    assert line.startswith("10_reward_finetuning: SD 1.5 would need") and "In[7]" in line
