import random

import numpy as np
import pytest
import torch

from course_utils.device import default_dtype, get_device, seed_everything


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_default_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert get_device() == torch.device(expected)


def test_the_default_device_computes():
    x = torch.ones(2, device=get_device())
    assert (x + x).sum().item() == 4


def test_cpu_is_always_there():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_cuda_says_so():
    with pytest.raises(RuntimeError, match="'cuda' was asked for but is not available"):
        get_device("cuda")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        get_device("gpu")


def test_env_var_prefers_a_device(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_default_dtype():
    assert default_dtype("cpu") == torch.float32
    assert default_dtype(torch.device("cuda")) == torch.float16  # no GPU needed to decide


def test_seed_everything_repeats_all_generators():
    g = seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    g = seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    assert a == b


def test_seed_must_be_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything("7")


def test_course_dtype_sets_the_default(monkeypatch):
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        monkeypatch.setenv("COURSE_DTYPE", name)
        assert default_dtype("cpu") == dtype and default_dtype("cuda") == dtype


def test_bad_course_dtype_names_the_choices(monkeypatch):
    monkeypatch.setenv("COURSE_DTYPE", "fp16")
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        default_dtype("cpu")


def test_course_dtype_reaches_load_pipeline(monkeypatch, tiny_pipe_dir):
    from course_utils.models import load_pipeline

    monkeypatch.setenv("COURSE_DTYPE", "bfloat16")
    pipe = load_pipeline(str(tiny_pipe_dir), device="cpu")
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.bfloat16}


def test_budget_is_quick_only_under_course_quick(monkeypatch):
    from course_utils.device import budget

    monkeypatch.delenv("COURSE_QUICK", raising=False)
    assert budget(20, 4) == 20
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert budget(20, 4) == 4
    monkeypatch.setenv("COURSE_QUICK", "yes")
    with pytest.raises(ValueError, match="COURSE_QUICK='yes'"):
        budget(20, 4)
    with pytest.raises(ValueError, match="0 < quick <= full"):
        budget(4, 20)
