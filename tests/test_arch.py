"""The "sd15" architecture is Stable Diffusion 1.5's, checked without a download or a GPU:
built on the meta device (no memory), its parameter counts equal SD 1.5's published ones."""

import pytest
import torch
from transformers import CLIPTextModel

from course_utils.device import default_dtype
from course_utils.mini import arch as A

# sd-legacy/stable-diffusion-v1-5, unet/config.json
SD15_DOWN = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
SD15_UP = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3


def test_sd15_configs_have_sd15_sizes():
    with torch.device("meta"):
        unet, vae, text = (
            A.build_unet("sd15"),
            A.build_vae("sd15"),
            CLIPTextModel(A.text_config("sd15")),
        )
    count = lambda m: sum(p.numel() for p in m.parameters())
    # sd-legacy/stable-diffusion-v1-5: unet 859,520,964; vae 83,653,863; CLIP ViT-L/14 text 123,060,480
    assert (count(unet), count(vae), count(text)) == (859_520_964, 83_653_863, 123_060_480)
    assert (
        unet.config.sample_size == 64 and unet.config.cross_attention_dim == 768
    )  # 4x64x64 latents
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8 and vae.config.sample_size == 512
    assert list(unet.config.down_block_types) == SD15_DOWN
    assert list(unet.config.up_block_types) == SD15_UP


@pytest.mark.parametrize("arch", ["tiny", "mini", "sd15-small"])
def test_every_size_is_sd15s_family(arch):
    """Read from the configs of the models as built (on the meta device: no weights): the VAE
    downsamples by 8 into 4 channels, the U-Net maps those latents to latents, cross-attends to
    the text width, and uses SD 1.5's block types (fewer levels allowed)."""
    with torch.device("meta"):
        vae, unet = A.build_vae(arch), A.build_unet(arch)
    size = A.ARCHS[arch]["image_size"]
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8 and vae.config.latent_channels == 4
    assert unet.config.in_channels == unet.config.out_channels == 4
    assert unet.config.sample_size == size // 8  # the pipeline's default size
    assert unet.config.cross_attention_dim == A.ARCHS[arch]["text"]["hidden_size"]
    assert set(unet.config.down_block_types) == set(SD15_DOWN)
    assert set(unet.config.up_block_types) == set(SD15_UP)


def test_tiny_vae_and_unet_run_at_those_shapes():
    """The configs above, measured once by running the models (the tiny size: cheap)."""
    vae, unet = A.build_vae("tiny").eval(), A.build_unet("tiny").eval()
    size, d = A.ARCHS["tiny"]["image_size"], A.ARCHS["tiny"]["text"]["hidden_size"]
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, size, size)).latent_dist.mean
        eps = unet(z, 10, encoder_hidden_states=torch.zeros(1, 77, d)).sample
    assert z.shape == (1, 4, size // 8, size // 8) == eps.shape


def test_dtype_on_cuda_is_fp16_without_a_gpu():
    assert default_dtype("cuda:0") == torch.float16 and default_dtype("mps") == torch.float32


def test_gpu_bench_runs_on_the_cpu_path(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(
        [
            "--arch",
            "tiny",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--dtypes",
            "fp32",
            "--compile",
            "no",
        ]
    )
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32")][0]
    assert row.split("|")[-2].strip() == "0.0e+00"  # hand loop == pipeline
