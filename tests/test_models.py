import time

import pytest
import torch
from diffusers import StableDiffusionPipeline

from conftest import fake_hf_cache
from course_utils.models import (
    KNOWN_NAMES,
    WeightsNotFoundError,
    find_sd15,
    load_pipeline,
    resolve_name,
)

SD15 = "sd-legacy/stable-diffusion-v1-5"


def test_load_from_folder_is_a_real_pipeline(tiny_pipe):
    assert isinstance(tiny_pipe, StableDiffusionPipeline)
    assert tiny_pipe.device.type == "cpu" and tiny_pipe.unet.dtype == torch.float32
    assert tiny_pipe.safety_checker is None


def test_sd15_loads_offline_from_the_hf_cache(tmp_path, tiny_pipe_dir, monkeypatch):
    snap = fake_hf_cache(tmp_path, tiny_pipe_dir, SD15)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SD15_PATH", raising=False)
    assert find_sd15() == snap
    pipe = load_pipeline("sd15", device="cpu")
    ref = StableDiffusionPipeline.from_pretrained(tiny_pipe_dir, safety_checker=None)
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_sd15_path_env_var(tiny_pipe_dir, monkeypatch):
    monkeypatch.setenv("SD15_PATH", str(tiny_pipe_dir))
    assert isinstance(load_pipeline("sd15", device="cpu"), StableDiffusionPipeline)


def test_missing_sd15_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("SD15_PATH", raising=False)
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="hf download sd-legacy/stable-diffusion-v1-5"):
        load_pipeline("sd15", device="cpu")
    assert time.perf_counter() - start < 2.0  # no network wait


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError) as e:
        load_pipeline("sdxl-turbo")
    assert all(n in str(e.value) for n in KNOWN_NAMES)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path))


def test_name_type_checked():
    with pytest.raises(TypeError, match="model name must be a string"):
        load_pipeline(42)


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks sd15 on a GPU with weights")
def test_auto_is_mini_sd_without_gpu(monkeypatch, tmp_path, tiny_pipe_dir):
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    fake_hf_cache(tmp_path, tiny_pipe_dir, SD15)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # weights present, but no GPU
    assert resolve_name("auto") == "mini-sd"


def test_course_model_env_replaces_auto(monkeypatch):
    monkeypatch.setenv("COURSE_MODEL", "sd15")
    assert resolve_name("auto") == "sd15"
    assert resolve_name("mini-sd") == "mini-sd"  # an explicit name wins


def test_fp16_only_download_loads_in_fp32_on_cpu(tiny_pipe, tmp_path):
    """`hf download ... "*fp16.safetensors"` leaves only fp16 variant files; they still load."""
    tiny_pipe.save_pretrained(tmp_path, safe_serialization=True, variant="fp16")
    assert not [p for p in (tmp_path / "unet").glob("*.safetensors") if ".fp16." not in p.name]
    pipe = load_pipeline(str(tmp_path), device="cpu")
    assert pipe.unet.dtype == torch.float32


def test_is_mini_sd_is_false_for_another_pipeline(tiny_pipe):
    """The negative case; the positive one (mini-sd itself) is in
    test_mini.py::test_mini_sd_loads_offline_without_cache, which loads mini-sd anyway."""
    from course_utils.models import is_mini_sd

    assert not is_mini_sd(tiny_pipe)


def test_half_precision_on_a_cpu_is_channels_last_with_the_same_values(tiny_pipe, tiny_pipe_dir):
    """A CPU convolves 16-bit tensors through oneDNN only with channels-last weights (else a
    naive kernel, ~14x slower for mini-sd's VAE): load_pipeline changes the layout, no value."""
    half = load_pipeline(str(tiny_pipe_dir), device="cpu", dtype=torch.float16)
    conv = half.vae.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert half.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(conv.float(), tiny_pipe.vae.decoder.conv_in.weight.half().float())
    assert tiny_pipe.unet.conv_in.weight.is_contiguous()  # float32 keeps the usual layout
