"""mini-sd: the data and judge, the training code (smoke), and the committed model."""

import numpy as np
import pytest
import torch

from course_utils import MINI_SD_PATH
from course_utils.mini import data as D
from mini_sd.train import Config, train_clip, train_vae

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
    """load_pipeline("mini-sd") with an empty cache and HF_HUB_OFFLINE: 64x64 pictures, and
    is_mini_sd recognises it (the guard of the notebooks' trained-quality cells; the negative
    case is in test_models.py). The folder's own files say what plain
    `StableDiffusionPipeline.from_pretrained(folder)` reads: no safety checker or feature
    extractor to look for, and a text encoder with CLIP's vocabulary."""
    import json

    from course_utils.models import is_mini_sd, load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    pipe = load_pipeline("mini-sd", device="cpu")
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert is_mini_sd(pipe)
    index = json.loads((MINI_SD_PATH / "model_index.json").read_text())
    assert index["safety_checker"] == index["feature_extractor"] == [None, None]
    assert index["requires_safety_checker"] is False
    text_config = json.loads((MINI_SD_PATH / "text_encoder" / "config.json").read_text())
    assert text_config["vocab_size"] == 49408


@needs_model
def test_mini_sd_files_are_safetensors_and_small():
    files = [p for p in MINI_SD_PATH.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pkl", ".ckpt")]
    assert sum(p.stat().st_size for p in files) < 40 * 2**20


def test_training_runs_on_two_processes(tmp_path):
    """Accelerate as intended: `make train-mini` launched on two processes (two CPU processes
    here, torchrun + gloo; GPUs the same way) draws different batches in each process, and only
    the main process writes the checkpoints and the one export."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    out, work = tmp_path / "out", tmp_path / "work"
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(root / "scripts")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port),
           str(root / "tests" / "two_process_training.py"), str(out), str(work)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["drawn"]) == len(ranks[1]["drawn"]) > 0
    assert all(a != b for a, b in zip(ranks[0]["drawn"], ranks[1]["drawn"]))  # every batch differs
    assert ranks[0]["exports"] == [0] and ranks[1]["exports"] == []  # one export, by rank 0
    assert (out / "model_index.json").is_file() and (out / "unet").is_dir()


def test_unet_training_loss_is_the_taught_one():
    """mini-sd's U-Net stage trains with ddpm.training_loss (notebook 04); over a short run of
    optimiser steps it equals the loss written with diffusers' DDPMScheduler.add_noise."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from course_utils import ddpm
    from course_utils.mini.arch import SD_SCHEDULER, build_unet

    torch.manual_seed(0)
    unet = build_unet("tiny").train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    reference = DDPMScheduler.from_config(SD_SCHEDULER)
    ab = ddpm.alphas_cumprod(ddpm.scaled_linear_betas())
    text = torch.randn(4, 77, 32)
    eps_model = lambda xt, t: unet(xt, t, encoder_hidden_states=text).sample
    for step in range(4):
        x0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(100 + step))
        ours = ddpm.training_loss(eps_model, x0, ab, generator=torch.Generator().manual_seed(step))
        g = torch.Generator().manual_seed(step)  # the same draws, in training_loss's order
        t = torch.randint(0, 1000, (4,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        theirs = F.mse_loss(eps_model(reference.add_noise(x0, noise, t), t), noise)
        assert abs(ours.item() - theirs.item()) <= 1e-6 * theirs.item(), (step, ours, theirs)
        opt.zero_grad()
        ours.backward()
        opt.step()


def test_held_out_pictures_are_not_in_the_training_set():
    from course_utils.mini import data

    _, specs = data.held_out_dataset(300)
    training = {data.sample_spec(data.TRAINING_SEED, i) for i in range(data.N_TRAINING)}
    assert len(specs) == 300 and not training & set(specs)
    _, plain = data.make_dataset(300, seed=1)
    assert len(training & set(plain)) > 50  # why the helper exists: another seed is not enough
    assert data.held_out_dataset(5)[1] == specs[:5]  # deterministic
    with pytest.raises(ValueError, match="training seed"):
        data.held_out_dataset(5, seed=data.TRAINING_SEED)


def test_prompt_accuracy_counts_what_the_judge_reads_back():
    pictures, specs = D.make_dataset(12, seed=3)
    captions = [
        D.caption(s, template="a {color} {shape} on a {background} background") for s in specs
    ]
    images = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255
    assert D.prompt_accuracy(images, captions) == {"color": 1.0, "shape": 1.0, "background": 1.0}
    wrong = [
        c.replace(s.shape, "square" if s.shape != "square" else "circle")
        for c, s in zip(captions, specs)
    ]
    assert D.prompt_accuracy(images, wrong)["shape"] == 0.0
    assert D.prompt_accuracy(list(pictures), captions, keys=("color",)) == {"color": 1.0}
    with pytest.raises(ValueError, match="one prompt per image"):
        D.prompt_accuracy(images, captions[:3])
    with pytest.raises(ValueError, match="no prompt names a size"):
        D.prompt_accuracy(images, captions, keys=("size",))


def test_foreground_mask_is_the_judges_shape():
    spec = D.Spec("red", "square", "white", "large", "center")
    picture = D.render(spec)
    mask = D.foreground_mask(picture)
    drawn = np.abs(picture.astype(int) - D.BACKGROUNDS["white"]).sum(-1) > 90  # far from white
    assert mask.shape == (64, 64) and (mask == drawn).mean() > 0.99
    assert np.array_equal(D.foreground_mask(picture / 255.0), mask)  # floats in [0, 1] alike


def test_the_new_shape_is_never_in_the_training_pictures_or_captions():
    assert set(D.NEW_SHAPES).isdisjoint(D.SHAPES)
    assert all(s.shape in D.SHAPES for s in D._training_specs())
    assert not any(new in t for new in D.NEW_SHAPES for t in D.TEMPLATES)


def test_detector_scores_are_ious_and_empty_pictures_have_no_shape():
    spec = D.Spec("red", "cross", "white")
    scores = D.shape_scores(D.render(spec))
    assert set(scores) == set(D.SHAPES + D.NEW_SHAPES) and all(0 <= v <= 1 for v in scores.values())
    assert scores["cross"] > 0.9 and max(scores, key=scores.get) == "cross"
    blank = np.full((64, 64, 3), 128, np.uint8)
    assert D.detect_shape(blank) is None and set(D.shape_scores(blank).values()) == {0.0}
    assert D.detect_shape(D.render(spec, size=256)) == "cross"  # any size: read at 64x64
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB"):
        D.detect_shape(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="unknown shape"):
        D.Spec("red", "star", "white")
