"""`make bench-mini`: mini-sd's quality and speed in one table (the same rows every time).

Writes only where it is told (`--json`, `--card`); `make bench-mini` tells it the model's folder
in the repository, never the installed package.

VAE PSNR on held-out shapes (goal >= 28 dB) and on the real photos
mini-CLIP zero-shot colour accuracy on held-out shapes (goal >= 95%)
text-to-image judge accuracy, colour and shape, at guidance 1.0 and 7.5
  (goal with guidance: colour >= 90%, shape >= 60%, clearly above guidance 1.0)
seconds per image, 20 steps, CPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from course_utils.images import decode, encode, psnr, to_tensor
from course_utils.mini import data as D
from mini_sd.card import table, write_card


def vae_psnr(vae, images: np.ndarray) -> float:
    x = torch.cat([to_tensor(im) for im in images])
    rec = torch.cat([decode(vae, encode(vae, x[i : i + 50])) for i in range(0, len(x), 50)])
    return float(np.mean([psnr(r, o) for r, o in zip(rec, x)]))


def judge_accuracy(
    pipe, n: int, guidance_scale: float, steps: int = 20, seed: int = 1
) -> dict[str, float]:
    """Generate one image per held-out prompt "a {color} {shape} on a {background} background"
    and let the judge read colour and shape back."""
    from course_utils.sampling import generate

    specs = [D.sample_spec(seed + 1000, i) for i in range(n)]
    specs = [D.Spec(s.color, s.shape, s.background) for s in specs]
    prompts = [
        D.caption(s, template="a {color} {shape} on a {background} background") for s in specs
    ]
    hits = {"color": 0, "shape": 0}
    for i in range(0, n, 16):
        imgs = generate(
            pipe, prompts[i : i + 16], steps=steps, guidance_scale=guidance_scale, seed=seed + i
        ).images
        for img, s in zip(imgs, specs[i : i + 16]):
            verdict = D.judge(img.permute(1, 2, 0).numpy())
            hits["color"] += verdict["color"] == s.color
            hits["shape"] += verdict["shape"] == s.shape
    return {k: v / n for k, v in hits.items()}


def seconds_per_image(pipe, steps: int = 20, repeats: int = 3) -> float:
    from course_utils.sampling import generate

    generate(pipe, "a red circle", steps=2)  # warm-up
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        generate(pipe, "a red circle on a blue background", steps=steps, seed=r)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run(n_prompts: int = 64, n_images: int = 200) -> dict:
    from course_utils.clip import load_mini_clip, zero_shot
    from course_utils.models import load_pipeline

    torch.manual_seed(0)
    pipe = load_pipeline("mini-sd", device="cpu")
    held, specs = D.make_dataset(n_images, seed=1)
    photos = np.stack([np.asarray(to_pil_square(p)) for p in D.real_photos()])
    clip = load_mini_clip()
    x = torch.from_numpy(held).permute(0, 3, 1, 2).float() / 255
    preds = zero_shot(clip, pipe.tokenizer, x, list(D.COLORS))
    out = {
        "vae_psnr_shapes_db": vae_psnr(pipe.vae, held),
        "vae_psnr_photos_db": vae_psnr(pipe.vae, photos),
        "clip_zero_shot_color": float(np.mean([p == s.color for p, s in zip(preds, specs)])),
    }
    for g in (1.0, 7.5):
        acc = judge_accuracy(pipe, n_prompts, g)
        out[f"judge_color_g{g}"], out[f"judge_shape_g{g}"] = acc["color"], acc["shape"]
    out["seconds_per_image_20_steps_cpu"] = seconds_per_image(pipe)
    return out


def to_pil_square(photo: np.ndarray, size: int = D.SIZE):
    from course_utils.images import to_pil

    return to_pil(to_tensor(photo, size=size))[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts per guidance scale")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the numbers there as JSON (make bench-mini: the model's folder in the repo)",
    )
    ap.add_argument(
        "--card",
        type=Path,
        default=None,
        help="rewrite the model card (README.md) of this mini-sd folder from its JSON files",
    )
    args = ap.parse_args(argv)
    t = time.time()
    results = run(args.prompts)
    print(table(results))
    print(
        f"(measured in {time.time() - t:.0f} s; torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.card:
        write_card(args.card)


if __name__ == "__main__":
    main()
