"""Shared fixtures: a tiny randomly initialised Stable Diffusion pipeline, saved and reloaded.

The tiny pipeline has SD 1.5's classes, CLIP's real tokenizer and scheduler config, and random
weights; it stands in for SD 1.5 wherever a test needs "a pipeline" and not mini-sd's quality.
"""

from __future__ import annotations

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
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"), model_max_length=77
    )
