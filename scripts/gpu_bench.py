"""GPU timings of the hand-written loop vs StableDiffusionPipeline on SD 1.5's architecture with
random weights (no download): seconds per image and time ratio at 50 steps, for fp32, fp16 and
bf16, with and without torch.compile of the U-Net. Run on a machine with a CUDA GPU:

    python scripts/gpu_bench.py                      # sd15 architecture, 512x512, 50 steps
    python scripts/gpu_bench.py --arch tiny --device cpu --steps 2 --dtypes fp32   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_utils.mini.arch import build_random_pipeline
from course_utils.sampling import generate

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sd15")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="fp32,fp16,bf16")
    ap.add_argument("--compile", choices=["no", "yes", "both"], default="both")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    base = build_random_pipeline(args.arch, seed=0)
    base.set_progress_bar_config(disable=True)
    prompt = "an astronaut riding a horse"
    print("| dtype | torch.compile | hand loop s/image | pipeline s/image | ratio | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        for compiled in {"no": [False], "yes": [True], "both": [False, True]}[args.compile]:
            pipe = base.to(device, DTYPES[name])
            if compiled:
                pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs")
            hand = lambda pipe=pipe: generate(pipe, prompt, steps=args.steps, seed=0).images
            lib = lambda pipe=pipe: (
                pipe(
                    prompt,
                    num_inference_steps=args.steps,
                    generator=torch.Generator("cpu").manual_seed(0),
                    output_type="pt",
                )
                .images.float()
                .cpu()
            )
            hand(), lib()  # warm-up (and compilation)
            t_hand, a = timed(hand, device, args.repeats)
            t_lib, b = timed(lib, device, args.repeats)
            print(
                f"| {name} | {'yes' if compiled else 'no'} | {t_hand:.3f} | {t_lib:.3f} | {t_hand / t_lib:.3f} | {(a - b).abs().max().item():.1e} |"
            )
            if compiled:
                pipe.unet = pipe.unet._orig_mod
    print(
        f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, {args.steps} steps)"
    )


if __name__ == "__main__":
    main()
