"""course_utils: the small, tested helpers of "Stable Diffusion from the inside".

Each module holds one idea that a notebook writes out first:

    device        device, dtype, seeding, the COURSE_* switches          (every notebook)
    models        load_pipeline: SD 1.5 on a GPU, the embedded mini-sd elsewhere (00)
    tokenization  CLIP's byte-pair encoding written out                  (01)
    clip          CLIP's text and vision towers: similarity, zero-shot   (02)
    images        to_tensor / to_pil / psnr, the VAE's encode / decode   (03)
    ddpm          the DDPM forward and reverse maths                      (04)
    flow          the DDPM schedule as a flow-matching schedule           (05)
    sampling      the denoising loop with classifier-free guidance        (06)
    gym           a base model + reward environment ("images/red")        (06)
    editing       img2img, inpainting (with RePaint resampling), prompt switching (07)
    unet          timestep features; cross-attention maps recorded or replayed (08)
    samplers      Euler, Heun, DPM-Solver++(2M), Euler ancestral in sigma; schedules (09)
    finetune      LoRA through peft and diffusers' format; DRaFT-K, reward-weighted regression (10);
                  a new word: textual inversion, DreamBooth-LoRA with prior preservation  (11)
    check         `report`: print a difference and assert a tolerance     (all)
    meter         SD 1.5's memory and T4 time of a notebook, counted on a CPU (make test, README)
    viz, widgets  image grids and plots; live controls                    (all)
    exercises     the exercises' check functions                          (all)
    mini          mini-sd's architectures, data generator and judge

Glossary (one ASCII name per symbol; the README's table has them all): ᾱ_t -> alpha_bar
(alphas_cumprod in diffusers), ε̂ -> eps_pred, x̂_0 -> x0_pred, g -> guidance_scale,
(B, 77, d) -> text_emb; flow time t in [0, 1] runs from x_noise (t = 0) to x_data (t = 1).
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
    "finetune",
    "flow",
    "gym",
    "images",
    "meter",
    "models",
    "samplers",
    "sampling",
    "tokenization",
    "unet",
    "viz",
    "widgets",
}


def __getattr__(name: str):
    """`cu.ddpm`, `cu.viz`, ... import on first use, so `import course_utils` stays light."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"course_utils.{name}")
    raise AttributeError(f"module 'course_utils' has no attribute {name!r}")
