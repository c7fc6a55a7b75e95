"""mini-sd's model card (README.md in its folder), written from train_info.json and bench.json."""

from __future__ import annotations

import json
from pathlib import Path


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


ROWS = [
    ("VAE PSNR, held-out shapes", "vae_psnr_shapes_db", "{:.1f} dB", ">= 28 dB"),
    (
        "VAE PSNR, real photos (cat, astronaut, coffee, rocket)",
        "vae_psnr_photos_db",
        "{:.1f} dB",
        "-",
    ),
    ("mini-CLIP zero-shot colour accuracy", "clip_zero_shot_color", "{:.0%}", ">= 95%"),
    ("judge colour accuracy, guidance 1.0", "judge_color_g1.0", "{:.0%}", "-"),
    ("judge colour accuracy, guidance 7.5", "judge_color_g7.5", "{:.0%}", ">= 90%"),
    ("judge shape accuracy, guidance 1.0", "judge_shape_g1.0", "{:.0%}", "-"),
    ("judge shape accuracy, guidance 7.5", "judge_shape_g7.5", "{:.0%}", ">= 60%"),
    ("seconds per image, 20 steps, CPU", "seconds_per_image_20_steps_cpu", "{:.3f} s", "-"),
]


def table(results: dict) -> str:
    lines = ["| metric | mini-sd | goal |", "|---|---|---|"]
    lines += [f"| {name} | {fmt.format(results[key])} | {goal} |" for name, key, fmt, goal in ROWS]
    return "\n".join(lines)


def write_card(folder: Path) -> Path:
    folder = Path(folder)
    info = (
        json.loads((folder / "train_info.json").read_text())
        if (folder / "train_info.json").exists()
        else {}
    )
    cfg, secs = info.get("config", {}), info.get("seconds", {})
    lines = [
        "# mini-sd: the course's embedded miniature Stable Diffusion",
        "",
        "Same classes and folder layout as Stable Diffusion 1.5 (`StableDiffusionPipeline.from_pretrained(this folder)`),",
        "64x64 images, 4x8x8 latents, CLIP's real 49,408-token BPE vocabulary. Trained from scratch by",
        "`make train-mini` (`scripts/mini_sd/train.py`) on procedurally drawn, captioned coloured shapes",
        "plus crops of the four photos shipped in scikit-image. No safety checker; weights in safetensors.",
        "",
        "| part | class | parameters |",
        "|---|---|---|",
    ]
    for part, cls in (
        ("text_encoder", "CLIPTextModel"),
        ("vae", "AutoencoderKL"),
        ("unet", "UNet2DConditionModel"),
    ):
        n = info.get("parameters", {}).get(part)
        lines.append(f"| {part} | {cls} | {n / 1e6:.2f} M |" if n else f"| {part} | {cls} | |")
    lines += ["| clip/ | CLIPModel vision tower + projections (text tower = text_encoder) | |", ""]
    lines += [
        "## Training",
        f"Seed {cfg.get('seed')}, {cfg.get('n_images')} shape images + {cfg.get('n_photo_crops')} photo crops.",
        f"CLIP {cfg.get('clip_steps')} steps (batch {cfg.get('clip_batch')}), VAE {cfg.get('vae_steps')} steps (batch {cfg.get('vae_batch')}),",
        f"U-Net {cfg.get('unet_steps')} steps (batch {cfg.get('unet_batch')}, {cfg.get('empty_caption_p')} empty captions, EMA {cfg.get('ema_decay')}).",
        "Seconds per stage on a 2-core CPU: "
        + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
        + f" (total {sum(secs.values()) / 60:.1f} min).",
        f"Git commit of the training code: `{info.get('git_commit', 'unknown')}`. Loss curves: `curves.png`.",
        "",
    ]
    if (folder / "bench.json").exists():
        lines += [
            "## Measured quality (`make bench-mini`)",
            "",
            table(json.loads((folder / "bench.json").read_text())),
            "",
        ]
    lines += [f"Folder size: {_size_mb(folder):.1f} MB.", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path
