"""Shared fixtures: a tiny randomly initialised Stable Diffusion pipeline, saved and reloaded.

The tiny pipeline has SD 1.5's classes, CLIP's real tokenizer and scheduler config, and random
weights; it stands in for SD 1.5 wherever a test needs "a pipeline" and not mini-sd's quality.
"""

from __future__ import annotations

import os

# `make test` runs on both cores with pytest-xdist: two workers, one thread each (and so every
# notebook kernel they start), which beats one process with two threads (README, "Timings").
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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


# --- the plan of `make test` on two workers --------------------------------------------------
# xdist hands the units out in the order of COST, longest first, so that neither worker idles
# at the end; a notebook's nbval cells form one unit (one kernel runs them, in order). The
# seconds are measured on the 2-core machine with one thread a worker (`make test`'s own
# phase table below, and `pytest --durations`); a unit not listed counts 1 s.
COST: dict[tuple[str, str], float] = {}
RUN1, RUN2, RUN3, UNIT = "run 1: nbval", "run 2: half, cuda-sim", "run 3: sd15-small", "unit tests"


def unit_of(nodeid: str) -> tuple[str, str]:
    """(phase, unit) of a test id: a notebook's name for the three executions."""
    path, _, name = nodeid.partition("::")
    if path.endswith(".ipynb"):
        return RUN1, Path(path).stem
    if path.endswith("test_notebook_runs.py") and name.startswith("test_notebook_runs["):
        run, notebook = name.removeprefix("test_notebook_runs[").rstrip("]").split("-", 1)
        return (RUN2 if run == "half" else RUN3), notebook.removesuffix(".ipynb")
    return UNIT, nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        phase, notebook = unit_of(item.nodeid)
        if phase == RUN1:
            item.add_marker(pytest.mark.xdist_group(name=f"nbval-{notebook}"))
    items.sort(key=lambda item: -COST.get(unit_of(item.nodeid), 1.0))  # stable: cells keep order


_SECONDS: dict[str, float] = {}
_START = time.perf_counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    phase = unit_of(report.nodeid)[0]
    _SECONDS[phase] = _SECONDS.get(phase, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _SECONDS or hasattr(config, "workerinput"):
        return
    workers = getattr(config.option, "numprocesses", None) or 1
    terminalreporter.section("time per phase (seconds of work, summed over the workers)")
    for phase in (UNIT, RUN1, RUN2, RUN3):
        if phase in _SECONDS:
            terminalreporter.write_line(f"{phase:<24} {_SECONDS[phase]:7.0f} s")
    wall = time.perf_counter() - _START
    terminalreporter.write_line(f"{'wall clock':<24} {wall:7.0f} s on {workers} worker(s)")
