"""`load_pipeline`: one call that gives every notebook a `diffusers.StableDiffusionPipeline`.

    "mini-sd"  the course's embedded miniature SD (64x64 images, 4x8x8 latents), always there;
    "sd15"     Stable Diffusion 1.5 (512x512, 4x64x64 latents) from the local Hugging Face
               cache, or from the folder named by the environment variable SD15_PATH;
    "auto"     sd15 when its weights are present *and* a CUDA GPU is there, else mini-sd;
    a folder   any diffusers-format Stable Diffusion folder (model_index.json inside).

`COURSE_MODEL` (environment) replaces "auto", so `COURSE_MODEL=sd15 make lab` runs the whole
course on SD 1.5 without touching a notebook. Loading never touches the network: a missing
model fails at once with a message that says how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from course_utils import MINI_SD_PATH, meter
from course_utils._quiet import quiet_torchvision_hint
from course_utils.device import default_dtype, get_device, simulation_paused

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

SD15_REPO_IDS = (
    "sd-legacy/stable-diffusion-v1-5",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
)
KNOWN_NAMES = ("auto", "mini-sd", "sd15")
SD15_DOWNLOAD_HINT = (
    "Download Stable Diffusion 1.5 once, on a machine with internet access:\n"
    "    pip install -U huggingface_hub\n"
    '    hf download sd-legacy/stable-diffusion-v1-5 --include "*.json" "*.txt" '
    '"*fp16.safetensors"\n'
    "(about 2 GB; the weights land in the Hugging Face cache, ~/.cache/huggingface or $HF_HOME).\n"
    "Or point SD15_PATH at a folder that holds the diffusers layout (model_index.json, unet/, ...)."
)


class WeightsNotFoundError(FileNotFoundError):
    """The weights of the requested model are not on this machine."""


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment *now* (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def find_sd15() -> Path | None:
    """The local folder of SD 1.5 weights (SD15_PATH or a cached snapshot), or None."""
    if os.environ.get("SD15_PATH"):
        path = Path(os.environ["SD15_PATH"]).expanduser()
        return path if (path / "model_index.json").is_file() else None
    for repo_id in SD15_REPO_IDS:
        snap = cached_snapshot(repo_id, "model_index.json", "unet")
        if snap is not None:
            return snap
    return None


def cached_snapshot(repo_id: str, *required: str) -> Path | None:
    """The local snapshot folder of a Hugging Face repo that holds every `required` file or
    folder, or None. `<cache>/models--<org>--<name>/snapshots/<commit>/`, the commit named by
    `refs/main` tried first; looked up by hand, so a missing model costs no network time-out."""
    repo_dir = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    snapshots = [repo_dir / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    snapshots += sorted((repo_dir / "snapshots").glob("*"))
    return next((s for s in snapshots if all((s / r).exists() for r in required)), None)


def resolve_name(name: str = "auto") -> str | Path:
    """Map a model name to "mini-sd", "sd15" or a folder, applying COURSE_MODEL to "auto"."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model name must be a string or a path, got {type(name).__name__}")
    if name == "auto":
        name = os.environ.get("COURSE_MODEL") or "auto"
    if name == "auto":
        return "sd15" if torch.cuda.is_available() and find_sd15() is not None else "mini-sd"
    if name in KNOWN_NAMES:
        return name
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise WeightsNotFoundError(f"{path} holds no model_index.json: not a diffusers folder")
        return path
    raise ValueError(
        f"unknown model {str(name)!r}: use one of {', '.join(KNOWN_NAMES)} or a folder"
    )


def model_folder(name: str = "auto") -> Path:
    """The folder that `load_pipeline(name)` would load, or a WeightsNotFoundError."""
    resolved = resolve_name(name)
    if resolved == "mini-sd":
        if not (MINI_SD_PATH / "model_index.json").is_file():
            raise WeightsNotFoundError(
                f"the embedded model is missing from {MINI_SD_PATH}; train it with `make train-mini`"
            )
        return MINI_SD_PATH
    if resolved == "sd15":
        folder = find_sd15()
        if folder is None:
            where = os.environ.get("SD15_PATH") or hf_hub_cache()
            raise WeightsNotFoundError(
                f"Stable Diffusion 1.5 not found in {where}.\n{SD15_DOWNLOAD_HINT}"
            )
        return folder
    return Path(resolved)


def load_pipeline(
    name: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """Load a `StableDiffusionPipeline` offline, on `device` (default: get_device()) in `dtype`
    (default: `default_dtype(device)`: COURSE_DTYPE, else fp16 on CUDA and fp32 elsewhere).
    No safety checker; safetensors only."""
    quiet_torchvision_hint()
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as dlogging

    folder = model_folder(name)
    device = get_device(device)
    dtype = dtype or default_dtype(device)
    # `hf download ... "*fp16.safetensors"` fetches only the fp16 files: use them whatever the dtype
    has_fp16 = any(folder.glob("unet/*.fp16.safetensors"))
    has_full = any(".fp16." not in p.name for p in folder.glob("unet/*.safetensors"))
    variant = "fp16" if has_fp16 and (dtype == torch.float16 or not has_full) else None
    from transformers.utils import logging as tlogging

    dlogging.disable_progress_bar()
    tlogging.disable_progress_bar()
    # loaded with the CPU simulation of CUDA paused, then moved, as on a GPU (COURSE_DEVICE=cuda-sim)
    try:
        with simulation_paused():
            pipe = StableDiffusionPipeline.from_pretrained(
                folder,
                dtype=dtype,
                variant=variant,
                use_safetensors=True,
                local_files_only=True,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
    finally:
        dlogging.enable_progress_bar()
        tlogging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    # diffusers warns that fp16 "cannot run" on a CPU: it can (slowly), and the course's CI runs it
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        pipe.to(device)
    finally:
        dlogging.set_verbosity(level)
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        # A CPU without fp16/bf16 instructions convolves half precision through a naive kernel
        # unless the weights are channels-last (then oneDNN's): 64x64 VAE decode 1.95 s -> 0.14 s
        # on one AVX2 core. Only the memory layout changes, never a value.
        for module in (pipe.unet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    if device.type == "cuda":  # decode (and encode) one image at a time: SD 1.5's VAE at 512^2
        pipe.vae.enable_slicing()  # needs 0.66 GiB of activations an image (course_utils.meter)
    meter.attach_if_asked(pipe)  # SD 1.5's cost of this notebook, when make test asks (issue 28)
    return pipe


def is_mini_sd(pipe: StableDiffusionPipeline) -> bool:
    """True when `pipe` is the embedded mini-sd: the one visible guard of the cells that
    measure mini-sd's *trained* quality (judge accuracy, zero-shot, PSNR thresholds).

    Everything else in a notebook runs on any Stable Diffusion pipeline; a guarded cell prints
    what it would show on SD 1.5 instead of asserting mini-sd's numbers.
    """
    path = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path")
    return path is not None and Path(path).resolve() == MINI_SD_PATH
