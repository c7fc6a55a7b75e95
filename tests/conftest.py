"""Shared fixtures: a tiny randomly initialised Stable Diffusion pipeline, saved and reloaded.

The tiny pipeline has SD 1.5's classes, CLIP's real tokenizer and scheduler config, and random
weights; it stands in for SD 1.5 wherever a test needs "a pipeline" and not mini-sd's quality.
"""

from __future__ import annotations

import shutil

import pytest

from course_utils.mini.arch import build_random_pipeline
from course_utils.tokenization import TOKENIZER_DIR


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_sd")
    build_random_pipeline("tiny", seed=0).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_pipe(tiny_pipe_dir):
    from course_utils.models import load_pipeline

    return load_pipeline(str(tiny_pipe_dir), device="cpu")


@pytest.fixture(scope="session")
def clip_tokenizer():
    from course_utils.tokenization import clip_tokenizer

    return clip_tokenizer()


def save_like_sd15(pipe, path):
    """save_pretrained, plus the tokenizer files SD 1.5's folder ships (vocab.json, merges.txt;
    transformers 5 writes only tokenizer.json)."""
    pipe.save_pretrained(path, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER_DIR / name, path / "tokenizer" / name)
    return path


@pytest.fixture(scope="session")
def sd15_small_dir(tmp_path_factory):
    """SD 1.5's classes and folder layout at other sizes than mini-sd ("sd15-small" in arch)."""
    path = tmp_path_factory.mktemp("sd15_small")
    return save_like_sd15(build_random_pipeline("sd15-small", seed=0), path)


def tiny_openai_clip(seed: int = 0):
    """A randomly initialised `CLIPModel` shaped like OpenAI's (224-pixel images), tiny."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=224,
        patch_size=32,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


def fake_hf_cache(home, folder, repo_id):
    """Lay a folder out exactly as `hf download` would: hub/models--org--name/snapshots/<sha>."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return repo / "snapshots" / sha


@pytest.fixture(scope="session")
def openai_clip_home(tmp_path_factory):
    """An HF_HOME whose cache holds a tiny random CLIP under OpenAI's ViT-L/14 repo id."""
    home = tmp_path_factory.mktemp("hf_home")
    folder = tmp_path_factory.mktemp("clip")
    tiny_openai_clip().save_pretrained(folder, safe_serialization=True)
    fake_hf_cache(home, folder, "openai/clip-vit-large-patch14")
    return home
