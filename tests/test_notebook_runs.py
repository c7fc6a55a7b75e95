"""Runs 2 and 3 of every notebook: the course is portable in dtype, size and model.

Run 1 is nbval over `notebooks/` (mini-sd, float32, outputs compared). The two runs here execute
every cell of every notebook again, with no output comparison, and fail on any cell that raises:

    half        mini-sd loaded in half precision on the CPU (COURSE_DTYPE=HALF_DTYPE): the nearest
                thing to CUDA fp16 that a CPU has. A float32 tensor fed to a half-precision
                module raises here exactly as it does on a GPU (see test_half_precision_*).
    sd15-small  a random pipeline of SD 1.5's classes at other sizes than mini-sd (text width
                48, 256x256 images, 4x32x32 latents, three U-Net levels, PNDM as SD 1.5 ships
                it), loaded through COURSE_MODEL=<folder>: every size a cell uses must come from
                the configs, and cells that measure mini-sd's *trained* quality take their
                `is_mini_sd(pipe)` branch.

Both set COURSE_QUICK=1 (fewer steps and samples; `course_utils.device.budget`).
HALF_DTYPE is bfloat16: on this CPU float16 kernels run mini-sd's pipeline 7x slower than
float32 (4.6 s vs 0.68 s for 4 images x 20 steps) while bfloat16 runs at float32's speed
(0.64 s); both are 16-bit types that torch refuses to mix with float32, so both catch the same
dtype mismatches. Set SD_COURSE_HALF=float16 to run this file in float16 instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from course_utils.mini.arch import build_random_pipeline

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
HALF_DTYPE = os.environ.get("SD_COURSE_HALF", "bfloat16")


def run_settings(run: str, sd15_small_dir: Path, openai_clip_home: Path) -> dict[str, str]:
    if run == "half":
        return {"COURSE_MODEL": "mini-sd", "COURSE_DTYPE": HALF_DTYPE, "COURSE_QUICK": "1"}
    # SD 1.5's folder has no vision tower: 02 then takes OpenAI's CLIP from the HF cache
    return {
        "COURSE_MODEL": str(sd15_small_dir),
        "COURSE_DTYPE": "float32",
        "COURSE_QUICK": "1",
        "HF_HOME": str(openai_clip_home),
    }


def execute(path: Path, env: dict[str, str], monkeypatch) -> list[str]:
    """Execute every cell of a notebook in a fresh kernel that inherits `env`; return one line
    per cell that raised: its index, its first line and the error (short, without colours)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        startup_timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    failures = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                where = [re.sub(r"\x1b\[[0-9;]*m", "", t) for t in out["traceback"]]
                line = next((w for w in reversed(where) if "----> " in w or "--> " in w), "")
                first = cell.source.splitlines()[0] if cell.source else ""
                failures.append(
                    f"cell {i} ({first[:60]!r}): {out['ename']}: {out['evalue'][:300]}"
                    + (f"\n      at {line.strip().splitlines()[-1][:200]}" if line else "")
                )
    return failures


@pytest.mark.parametrize("notebook", NOTEBOOKS)
@pytest.mark.parametrize("run", ["half", "sd15-small"])
def test_notebook_runs(run, notebook, sd15_small_dir, openai_clip_home, monkeypatch):
    env = run_settings(run, sd15_small_dir, openai_clip_home)
    failures = execute(NB_DIR / notebook, env, monkeypatch)
    assert not failures, f"{notebook} ({run} run):\n  " + "\n  ".join(failures)


def test_half_precision_run_catches_a_float32_tensor():
    """What run 2 exists for: a float32 image into a half-precision VAE raises on the CPU too
    (07's cell 5 crashed exactly so before it built its tensors in the model's dtype)."""
    vae = build_random_pipeline("tiny").vae.to(getattr(torch, HALF_DTYPE))
    x = torch.zeros(1, 3, 64, 64)  # float32, as torch.zeros makes it
    with pytest.raises(RuntimeError, match="should be the same|expected .* same dtype"):
        vae.encode(x)
    vae.encode(x.to(vae.dtype))  # following the model's dtype is the fix
