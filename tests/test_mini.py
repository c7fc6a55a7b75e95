"""mini-sd: the data and judge, the training code (smoke), and the committed model."""

import numpy as np
import pytest
import torch

from course_utils import MINI_SD_PATH
from course_utils.mini import data as D
from course_utils.mini.train import Config, train_clip, train_vae

needs_model = pytest.mark.skipif(
    not (MINI_SD_PATH / "model_index.json").exists(), reason="mini-sd not trained"
)


def test_dataset_is_deterministic():
    a, specs_a = D.make_dataset(16, seed=3)
    b, specs_b = D.make_dataset(16, seed=3)
    assert np.array_equal(a, b) and specs_a == specs_b and a.shape == (16, 64, 64, 3)
    assert not np.array_equal(a, D.make_dataset(16, seed=4)[0])


def test_judge_reads_clean_images_back():
    images, specs = D.make_dataset(500, seed=7)
    for key in ("color", "shape", "background", "position", "size"):
        acc = np.mean([D.judge(im)[key] == getattr(s, key) for im, s in zip(images, specs)])
        assert acc >= 0.99, (key, acc)


def test_captions_name_what_is_drawn():
    spec = D.Spec("orange", "triangle", "blue", "small", "top left")
    for template in D.TEMPLATES:
        text = D.caption(spec, template=template)
        assert "orange triangle" in text and "a orange" not in text
        assert (
            D.parse_prompt(text)["color"] == "orange"
            and D.parse_prompt(text)["shape"] == "triangle"
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(color="teal"), "unknown color 'teal'"),
        (dict(shape="hexagon"), "unknown shape"),
        (dict(color="red", background="red"), "invisible"),
        (dict(size="large", position="top left"), "large shapes are always in the center"),
    ],
)
def test_bad_specs(kwargs, match):
    args = dict(color="red", shape="circle", background="blue") | kwargs
    with pytest.raises(ValueError, match=match):
        D.Spec(**args)


def test_bad_sizes_and_counts():
    with pytest.raises(ValueError, match="image size must be >= 8"):
        D.render(D.Spec("red", "circle", "blue"), size=-64)
    with pytest.raises(ValueError, match="n must be >= 1"):
        D.make_dataset(0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        D.judge(np.zeros((64, 64)))


@pytest.mark.parametrize("field", ["vae_steps", "unet_steps", "clip_batch"])
def test_trainer_rejects_zero_steps(field):
    with pytest.raises(ValueError, match=f"{field} must be >= 1"):
        Config(**{field: 0})


def test_training_smoke_losses_go_down():
    """A few seconds of the real training code on the tiny architecture: the losses fall."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    cfg = Config(
        arch="tiny",
        n_images=64,
        clip_steps=30,
        clip_batch=32,
        vae_steps=60,
        vae_batch=8,
        vae_full_size_steps=0,
        vae_lr=3e-3,
    )
    images, specs = D.make_dataset(64, seed=0)
    acc = Accelerator(cpu=True)
    _, vae_losses = train_vae(cfg, images, acc)
    _, clip_losses = train_clip(cfg, images, specs, acc)
    assert np.mean(vae_losses[-10:]) < 0.95 * np.mean(vae_losses[:10])
    assert np.mean(clip_losses[-10:]) < np.mean(clip_losses[:10])


@needs_model
def test_mini_sd_loads_offline_without_cache(monkeypatch, tmp_path):
    from diffusers import StableDiffusionPipeline

    from course_utils.models import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    pipe = load_pipeline("mini-sd", device="cpu")
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    direct = StableDiffusionPipeline.from_pretrained(MINI_SD_PATH, local_files_only=True)
    assert direct.text_encoder.config.vocab_size == 49408


@needs_model
def test_mini_sd_same_seed_same_image():
    from course_utils.models import load_pipeline
    from course_utils.sampling import generate

    pipe = load_pipeline("mini-sd", device="cpu")
    a = generate(pipe, "a red circle", steps=4, seed=11).images
    b = generate(pipe, "a red circle", steps=4, seed=11).images
    assert torch.equal(a, b)


@needs_model
def test_mini_sd_files_are_safetensors_and_small():
    files = [p for p in MINI_SD_PATH.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pkl", ".ckpt")]
    assert sum(p.stat().st_size for p in files) < 40 * 2**20
