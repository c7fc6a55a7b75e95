"""`make bench`: the figures the course is held to, one table, the same rows every time.

hand-written loop vs StableDiffusionPipeline: max |pixel diff| and time ratio (goal <= 1e-4, <= 1.05)
seconds per image, 20 steps (mini-sd, this machine)
"images/redness" reward: plain sampling vs best-of-4 vs reward-gradient guidance (16 samples)
then the mini-sd quality rows (scripts/mini_sd/bench.py)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_utils import gym
from course_utils.models import load_pipeline
from course_utils.sampling import generate
from mini_sd import bench as mini_bench
from mini_sd.card import table


def loop_vs_pipeline(pipe, steps: int = 20, repeats: int = 7) -> dict:
    prompt = "a red circle on a blue background"
    kw = dict(num_inference_steps=steps, guidance_scale=7.5, output_type="pt")
    generate(pipe, prompt, steps=2)
    pipe(prompt, num_inference_steps=2, output_type="pt")  # warm both paths up
    ours, theirs = [], []
    for r in range(repeats):  # interleaved, so drift in machine load hits both alike
        t = time.perf_counter()
        a = generate(pipe, prompt, steps=steps, guidance_scale=7.5, seed=r).images
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = pipe(prompt, generator=torch.Generator("cpu").manual_seed(r), **kw).images.cpu()
        theirs.append(time.perf_counter() - t)
    return dict(
        max_diff=(a - b).abs().max().item(),
        ratio=statistics.median(ours) / statistics.median(theirs),
        sec_per_image=statistics.median(ours),
    )


def rewards(pipe, n: int = 16) -> dict:
    env = gym.make(
        "images/stable_diffusion",
        "images/redness",
        20,
        base_model_kwargs=dict(pipe=pipe, prompt="a circle", guidance_scale=5.0),
    )
    plain = env.sample(n, generator=torch.Generator().manual_seed(1)).rewards
    pool = env.sample(4 * n, generator=torch.Generator().manual_seed(2)).rewards.view(n, 4)
    guided = gym.reward_guided_sample(
        env, n, scale=1.0, generator=torch.Generator().manual_seed(1)
    ).rewards
    return dict(
        plain=plain.mean().item(),
        best_of_4=pool.max(dim=1).values.mean().item(),
        guided=guided.mean().item(),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    args = ap.parse_args()
    pipe = load_pipeline("mini-sd", device="cpu")
    lp, rw = loop_vs_pipeline(pipe), rewards(pipe)
    mini = mini_bench.run(args.prompts)
    print("| metric | measured | goal |\n|---|---|---|")
    print(
        f"| hand loop vs pipeline, max abs pixel diff (fp32 CPU) | {lp['max_diff']:.1e} | <= 1e-4 |"
    )
    print(f"| hand loop / pipeline time ratio (median of 7) | {lp['ratio']:.3f} | <= 1.05 |")
    print(f"| seconds per image, 20 steps, hand loop | {lp['sec_per_image']:.3f} s | - |")
    print(f"| redness reward, plain sampling (16) | {rw['plain']:+.3f} | - |")
    print(f"| redness reward, best of 4 (16) | {rw['best_of_4']:+.3f} | > plain |")
    print(
        f"| redness reward, reward-gradient guidance, scale 1 (16) | {rw['guided']:+.3f} | > plain |"
    )
    print("\n".join(table(mini).splitlines()[2:]))
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")


if __name__ == "__main__":
    main()
