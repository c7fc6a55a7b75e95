"""Run 2 of every notebook: the course is portable in device, dtype, size and model.

Run 1 is nbval over `notebooks/` (mini-sd, float32, outputs compared), on the CPU kernels
conftest.py chooses (AVX2 on an AVX-512 machine, `MKL_CBWR=COMPATIBLE`; the unit tests go one
path below the best everywhere): a check that holds only for one machine's rounding fails there,
on every commit, rather than on a learner's laptop. Run 2, here, executes every cell of every notebook again, with no output comparison, and
fails on any cell that raises. It stands in for SD 1.5 in fp16 on a GPU:

    model   a random pipeline of SD 1.5's classes at other sizes than mini-sd ("sd15-small": text
            width 48, 96x96 images, 4x12x12 latents, three U-Net levels, PNDM as SD 1.5 ships
            it), loaded through COURSE_MODEL=<folder>: every size a cell uses must come from the
            configs, and cells that measure mini-sd's *trained* quality take their
            `is_mini_sd(pipe)` branch. SD 1.5's folder has no vision tower: 02 then takes
            OpenAI's CLIP from a temporary Hugging Face cache, as it would on a GPU machine.
    device  simulated CUDA placement (COURSE_DEVICE=cuda-sim, `course_utils.device.SimulatedCuda`):
            a tensor left on the CPU that meets one on the model's device raises as on a GPU.
    dtype   float16: a float32 tensor fed to a float16 module raises as on a GPU
            (test_half_precision_*), and fp16's range is fp16's (Adam's eps 1e-8 is 0 in it, a
            reward's gradient underflows in a float16 decoder); bfloat16, with float32's
            exponent, would hide both. On a CPU, `load_pipeline` makes half-precision weights
            channels-last, the layout oneDNN's 16-bit convolutions need (a 64x64 VAE decode on
            one AVX2 core: 1.95 s without it, 0.14 s with it).
    kernels this machine's own (AVX2 / AVX-512): torch's plain C path has no vectorised
            float16 kernels, and run 1 already covers it.

It sets COURSE_QUICK=1 (fewer steps and samples; `course_utils.device.budget`). Runs 2 and 3
were one each until issue 29 folded them into this one: the same checks, one kernel start and
one execution fewer per notebook.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import time
from pathlib import Path

import nbformat
import pytest
import torch
from jupyter_client import KernelManager

from course_utils.mini.arch import build_random_pipeline

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
HALF_DTYPE = "float16"


def run_settings(sd15_small_dir: Path, openai_clip_home: Path) -> dict[str, str | None]:
    """Run 2's environment; None removes a variable (run 1's plain C kernels among them)."""
    return {
        "COURSE_MODEL": str(sd15_small_dir),
        "COURSE_DEVICE": "cuda-sim",
        "COURSE_DTYPE": HALF_DTYPE,
        "COURSE_QUICK": "1",
        "ATEN_CPU_CAPABILITY": None,
        "MKL_CBWR": None,
        "COURSE_METER": None,  # run 1 meters SD 1.5's cost (conftest.py)
        "HF_HOME": str(openai_clip_home),
        "HF_HUB_CACHE": str(openai_clip_home / "hub"),  # an inherited HF_HUB_CACHE would win
    }


def execute(path: Path, env: dict[str, str | None], cell_timeout: float = 600) -> list[str]:
    """Execute every code cell of a notebook in a fresh kernel with `env`; return one line per
    cell that raised: its index, its first line and the error (short, without colours).

    Written on jupyter_client directly (as nbval is), not on nbclient: nbclient intermittently
    deadlocks on cells that display ipywidgets (jupyter/nbclient#312, jupyter/nbconvert#2029),
    which hung this test twice in ~40 runs. Here the shell reply and the IOPub idle are both
    polled, so a lost message costs at most a few seconds, never a hang."""
    km = KernelManager(kernel_name="python3")
    env = {k: v for k, v in (os.environ | env | {"MPLBACKEND": "Agg"}).items() if v is not None}
    km.start_kernel(cwd=str(path.parent), env=env)
    kc = km.client()
    kc.start_channels()
    failures = []
    try:
        kc.wait_for_ready(timeout=120)
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            errors = run_cell(kc, km, cell.source, cell_timeout)
            first = cell.source.splitlines()[0]
            failures += [f"cell {i} ({first[:60]!r}): {error}" for error in errors]
            if any(e.startswith(("TimeoutError", "DeadKernelError")) for e in errors):
                break  # the cells behind it would only queue up and time out too
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return failures


def run_cell(kc, km, source: str, timeout: float) -> list[str]:
    """Run one cell; the errors it raised, as 'Name: message' plus the failing line.

    Done when the kernel's IOPub says idle for this cell. Should a message be lost (the
    intermittent deadlock above), two fall-backs end the wait: the shell reply came 5 s ago, or,
    after 30 s without a word about this cell, an empty probe cell sent behind it has been
    answered (the kernel runs cells in order, so this one is over)."""
    msg_id = kc.execute(source, allow_stdin=False, stop_on_error=False)
    errors, replied, probe_id, probed, reply = [], None, None, None, None
    start = last_heard = time.monotonic()
    while True:
        now = time.monotonic()
        if now - start > timeout:
            km.interrupt_kernel()
            return errors + [f"TimeoutError: the cell ran longer than {timeout:.0f} s"]
        if not km.is_alive():
            return errors + ["DeadKernelError: the kernel died while running this cell"]
        if (replied and now > replied + 5) or (probed and now > probed + 2):
            if not errors and reply is not None and reply["content"].get("status") == "error":
                c = reply["content"]  # the IOPub error was lost; the shell reply still says so
                errors.append(f"{c.get('ename')}: {str(c.get('evalue'))[:300]}")
            return errors
        if probe_id is None and now - last_heard > 30:
            probe_id = kc.execute("", silent=True, store_history=False)
        with contextlib.suppress(queue.Empty):
            msg = kc.get_iopub_msg(timeout=0.2)
            if msg["parent_header"].get("msg_id") == msg_id:
                last_heard, content = time.monotonic(), msg["content"]
                if msg["msg_type"] == "error":
                    lines = [re.sub(r"\x1b\[[0-9;]*m", "", t) for t in content["traceback"]]
                    where = next((w for w in reversed(lines) if "--> " in w), "")
                    at = where.strip().splitlines()[-1][:200] if where else ""
                    errors.append(f"{content['ename']}: {content['evalue'][:300]}\n      at {at}")
                if msg["msg_type"] == "status" and content["execution_state"] == "idle":
                    return errors
        with contextlib.suppress(queue.Empty):
            shell = kc.get_shell_msg(timeout=0)
            parent = shell["parent_header"].get("msg_id")
            if parent == msg_id:
                replied, reply = time.monotonic(), shell
            probed = time.monotonic() if parent == probe_id else probed


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs(notebook, sd15_small_dir, openai_clip_home):
    failures = execute(NB_DIR / notebook, run_settings(sd15_small_dir, openai_clip_home))
    assert not failures, (
        f"{notebook} (run 2: sd15-small, cuda-sim, {HALF_DTYPE}):\n  " + "\n  ".join(failures)
    )


def test_half_precision_run_catches_a_float32_tensor():
    """What run 2 exists for: a float32 image into a half-precision VAE raises on the CPU too
    (07's cell 5 crashed exactly so before it built its tensors in the model's dtype)."""
    vae = build_random_pipeline("tiny").vae.to(getattr(torch, HALF_DTYPE))
    x = torch.zeros(1, 3, 64, 64)  # float32, as torch.zeros makes it
    with pytest.raises(RuntimeError, match="should be the same|expected .* same dtype"):
        vae.encode(x)
    vae.encode(x.to(vae.dtype))  # following the model's dtype is the fix
