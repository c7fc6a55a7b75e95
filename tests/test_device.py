import random

import numpy as np
import pytest
import torch

from course_utils.device import default_dtype, free_memory, get_device, seed_everything


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


# --- COURSE_DEVICE=cuda-sim: CUDA's placement rule on the CPU --------------------------------
from course_utils import device as D  # noqa: E402


def test_cuda_sim_raises_what_cuda_raises_and_lets_the_rest_through():
    with D.SimulatedCuda():
        on_gpu, on_cpu = torch.ones(3, device=D.SIMULATED_CUDA), torch.ones(3)
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            on_gpu + on_cpu
        with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
            on_gpu.numpy()
        with pytest.raises(RuntimeError, match="indices should be either on cpu"):
            on_cpu[torch.tensor([0, 1], device=D.SIMULATED_CUDA)]
        # what CUDA allows: CPU scalars, CPU indices, moves, device=x.device
        assert (on_gpu * torch.tensor(2.0)).device == D.SIMULATED_CUDA
        assert on_gpu[torch.tensor([0, 2])].device == D.SIMULATED_CUDA
        assert (on_gpu.cpu() + on_cpu).device == torch.device("cpu")
        assert (on_gpu.to("cpu", copy=True) + on_cpu).device == torch.device("cpu")  # 08's keep
        assert on_gpu.device == D.SIMULATED_CUDA  # .cpu() made a new tensor, as on CUDA
        assert (torch.zeros(3, device=on_gpu.device) + on_gpu).sum().item() == 3
        on_cpu.copy_(on_gpu)  # a cross-device copy is allowed


def test_cuda_sim_catches_a_cpu_latent_into_the_unet(tiny_pipe):
    unet = tiny_pipe.unet
    c = unet.config
    latent = torch.randn(1, c.in_channels, c.sample_size, c.sample_size)  # made on the CPU
    text = torch.randn(1, 77, c.cross_attention_dim)
    with D.SimulatedCuda():
        unet.to(D.SIMULATED_CUDA)
        try:
            with pytest.raises(RuntimeError, match="same device"), torch.no_grad():
                unet(latent, 10, encoder_hidden_states=text.to(D.SIMULATED_CUDA))
            with torch.no_grad():  # the fix: move it
                out = unet(latent.to(D.SIMULATED_CUDA), 10, text.to(D.SIMULATED_CUDA)).sample
            assert out.device == D.SIMULATED_CUDA
        finally:
            unet.to("cpu")


def test_cuda_sim_catches_08s_head_shares_with_masks_made_on_the_cpu(tiny_pipe):
    """08's head_shares multiplied the per-head sums (on the model's device) by shape masks made
    on the CPU: on a GPU, the very cell that measures SD 1.5 crashed. The fix moves the masks."""
    from course_utils import unet as U
    from course_utils.sampling import generate

    with D.SimulatedCuda():
        tiny_pipe.to(D.SIMULATED_CUDA)
        try:
            with U.recording(tiny_pipe.unet, U.AttentionStore(size=8, per_head=True)) as store:
                generate(tiny_pipe, ["a red circle"], steps=2, seed=0)
            sums = next(iter(store.head_sums.values()))  # (B, heads, 77, h, w)
            masks = torch.ones(1, *sums.shape[-2:])  # a mask computed from a CPU image
            with pytest.raises(RuntimeError, match="same device"):
                (sums[0, :, 2] * masks[0]).sum()
            shares = (sums[0, :, 2] * masks.to(sums.device)[0]).sum((-2, -1))
            assert shares.device == D.SIMULATED_CUDA
        finally:
            tiny_pipe.to("cpu")


def test_cuda_sim_runs_the_pipeline_a_training_step_and_equals_the_cpu(tiny_pipe):
    from course_utils.sampling import generate

    ref = generate(tiny_pipe, ["a red circle"], steps=3, seed=0).latents
    with D.SimulatedCuda():
        tiny_pipe.to(D.SIMULATED_CUDA)
        try:
            out = generate(tiny_pipe, ["a red circle"], steps=3, seed=0)
            assert out.latents.device == D.SIMULATED_CUDA
            layer = torch.nn.Linear(4, 4).to(D.SIMULATED_CUDA)
            opt = torch.optim.Adam(layer.parameters())
            layer(torch.randn(2, 4).to(D.SIMULATED_CUDA)).square().mean().backward()
            opt.step()  # gradients and Adam's state follow their parameters
            assert layer.weight.grad.device == D.SIMULATED_CUDA
        finally:
            tiny_pipe.to("cpu")
    assert torch.equal(out.latents, ref)  # the same numbers: only placement is simulated


def test_cuda_sim_beside_a_real_gpu_or_a_misspelt_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="has a real CUDA GPU: use COURSE_DEVICE=cuda"):
        get_device("cuda-sim")
    with pytest.raises(ValueError, match="unknown device 'cuda_sim'.*cuda-sim"):
        get_device("cuda_sim")


def test_cuda_sim_from_the_environment(monkeypatch):
    monkeypatch.setattr(D, "_GLOBAL_SIMULATION", object())  # as if on; this process stays plain
    monkeypatch.setenv("COURSE_DEVICE", "cuda-sim")
    assert get_device() == D.SIMULATED_CUDA
    assert default_dtype(get_device()) == torch.float16  # CUDA's default, simulated too


def test_free_memory_collects_a_deleted_model_with_cycles():
    """A pipeline's modules refer to each other: after `del`, only the cycle collector frees
    them, and free_memory runs it (11 frees the copies it no longer needs)."""
    import weakref

    model = torch.nn.Linear(2, 2)
    model.me = [model]  # a cycle, as a pipeline's components have
    alive = weakref.ref(model)
    del model
    free_memory()
    assert alive() is None
