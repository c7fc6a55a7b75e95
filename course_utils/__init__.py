"""course_utils: the small, tested helpers of "Stable Diffusion from the inside".

Each module holds one idea that a notebook writes out first:

    device        which device and dtype to run on, seeding          (every notebook)
    models        load_pipeline: SD 1.5 on a GPU, the embedded mini-sd elsewhere (00)
    tokenization  CLIP's byte-pair encoding written out                (01)
    images        to_tensor / to_pil / psnr, VAE encode / decode       (03)
    ddpm          the DDPM forward and reverse maths                    (04)
    flow          the DDPM schedule as a flow-matching schedule         (05)
    sampling      the denoising loop with classifier-free guidance      (06)
    gym           a base model + reward environment ("images/red")      (06)
    check         `report`: print a difference and assert a tolerance   (all)
    viz           image grids and plots                                 (all)

Glossary (one ASCII name per symbol): ᾱ_t -> alpha_bar (alphas_cumprod in diffusers),
ε̂ -> eps_pred, x̂_0 -> x0_pred, w -> guidance_scale, (B, 77, d) -> text_emb.
"""

from pathlib import Path

__version__ = "0.1.0"
MINI_SD_PATH = Path(__file__).resolve().parent / "mini_sd"

_SUBMODULES = {
    "check",
    "clip",
    "ddpm",
    "device",
    "editing",
    "exercises",
    "flow",
    "gym",
    "images",
    "models",
    "sampling",
    "tokenization",
    "viz",
    "widgets",
}


def __getattr__(name: str):
    """`cu.ddpm`, `cu.viz`, ... import on first use, so `import course_utils` stays light."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"course_utils.{name}")
    raise AttributeError(f"module 'course_utils' has no attribute {name!r}")
