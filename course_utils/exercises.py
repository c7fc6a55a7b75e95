"""Check functions for the notebooks' exercises. Each computes the right answer independently
(with transformers / diffusers / closed forms), compares, and prints a verdict — never the answer."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from course_utils.check import exercise
from course_utils.tokenization import clip_tokenizer


def _call(name: str, fn: Callable, *args: object) -> object:
    """Run the learner's function; a crash is reported in one line (the check never raises)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any error in a learner's code is a "not yet"
        print(f"{name}: your function raised {type(e).__name__}: {e}")
        return None


def _verdict(name: str, got: list, expected: list[torch.Tensor], atol: float, like: str) -> None:
    """Compare a learner function's results over several calls with the expected tensors. A crash
    was already reported by `_call`; a wrong type or shape is a "not yet" with a hint."""
    if any(v is None for v in got):
        return
    if all(isinstance(v, torch.Tensor) and v.shape == e.shape for v, e in zip(got, expected)):
        exercise(name, torch.stack(got), torch.stack(expected), atol=atol)
    else:
        print(f"{name}: not yet - return a tensor shaped like {like} (see the hint above)")


def check_weights_mb(answer: Callable[[torch.nn.Module], float]) -> None:
    """Ex 0.1: your `weights_mb(module)` -> the megabytes (2**20 bytes) its parameters take, in
    whatever dtype they are; checked on a small network in float32, float16 and bfloat16."""
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GroupNorm(8, 128))
    nets = [
        copy.deepcopy(net).to(dtype) for dtype in (torch.float32, torch.float16, torch.bfloat16)
    ]
    expected = [sum(p.nbytes for p in n.parameters()) / 2**20 for n in nets]
    got = _call("weights_mb", lambda: [float(answer(n)) for n in nets])
    if got is not None:
        exercise("weights_mb", torch.tensor(got), torch.tensor(expected), atol=1e-9)


def check_token_count(prompt: str, answer: int) -> None:
    """Ex 1.1: how many ids (start and end token included) does CLIP give `prompt`?"""
    exercise("token count", answer, len(clip_tokenizer()(prompt).input_ids))


def check_first_merge(word: str, answer: tuple[str, str]) -> None:
    """Ex 1.2: which pair does BPE merge first in `word` (symbols as in the byte table)?"""
    from course_utils.tokenization import SimpleCLIPTokenizer

    steps = SimpleCLIPTokenizer().bpe_steps(word)
    exercise("first merge", tuple(answer) == steps[0].pair if steps else answer is None, True)


def check_truncated_words(prompt: str, answer: int) -> None:
    """Ex 1.3: how many BPE tokens of `prompt` does SD's 77-token limit drop?"""
    n = len(clip_tokenizer()(prompt, verbose=False).input_ids)  # counting, on purpose untruncated
    exercise("tokens dropped", answer, max(0, n - 77))


def check_decode(answer: Callable[[list[int]], str]) -> None:
    """Ex 1.4: your `decode(ids)` -> text, against `CLIPTokenizer.decode(ids,
    skip_special_tokens=True)` on prompts with punctuation, accents, emoji and digits."""
    tok = clip_tokenizer()
    ids = [tok(p).input_ids for p in ("a red circle", "Café, naïve!", "😀 4k", "two  words")]
    got = _call("decode", lambda: [answer(i) for i in ids])
    if got is not None:
        exercise("decode", got == [tok.decode(i, skip_special_tokens=True) for i in ids], True)


def check_padding_mask(answer: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Ex 2.3: the additive mask of a text encoder given an attention mask: causal (0 where key
    j <= query i, -inf where j > i) and every padding key (attention_mask[j] == 0) blocked too."""
    n = attention_mask.shape[-1]
    expected = torch.full((n, n), float("-inf")).triu(1)
    expected = expected.masked_fill(torch.as_tensor(attention_mask)[None, :] == 0, float("-inf"))
    answer = torch.as_tensor(answer, dtype=torch.float32).cpu()
    exercise("padding mask", answer.shape == expected.shape and torch.equal(answer, expected), True)


def check_reparameterised_sample(
    answer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Ex 3.2: your `sample(moments, eps)`: split the encoder's 2c channels into mean and
    log-variance, clamp it to [-30, 20], std = exp(logvar / 2), return mean + std * eps; against
    diffusers' `DiagonalGaussianDistribution` (Kingma & Welling 2014, the reparameterisation)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    g = torch.Generator().manual_seed(0)
    moments = torch.randn(2, 8, 4, 4, generator=g) * 3
    eps = torch.randn(2, 4, 4, 4, generator=g)
    dist = DiagonalGaussianDistribution(moments)
    got = _call("sample", answer, moments, eps)
    if got is not None:
        exercise("reparameterised sample", got, dist.mean + dist.std * eps, atol=1e-5)


def check_compression_factor(
    answer: float,
    image_shape: tuple[int, int, int] = (3, 512, 512),
    latent_shape: tuple[int, int, int] = (4, 64, 64),
) -> None:
    """Ex 3.1: how many image numbers per latent number?"""
    exercise(
        "compression factor",
        answer,
        torch.tensor(image_shape).prod() / torch.tensor(latent_shape).prod(),
        atol=1e-6,
    )


def check_alpha_bar(t: int, answer: float) -> None:
    """Ex 4.1: alpha_bar_t of SD's schedule, to 4 decimals."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    exercise(f"alpha_bar_{t}", answer, sched.alphas_cumprod[t].item(), atol=5e-5)


def check_snr_half(answer: int) -> None:
    """Ex 4.2: the first timestep t at which the signal-to-noise ratio alpha_bar/(1-alpha_bar) < 1."""
    from diffusers import DDPMScheduler

    ab = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    ).alphas_cumprod
    exercise("SNR crosses 1 at t", answer, int(torch.nonzero(ab / (1 - ab) < 1)[0]))


def check_min_kl_weight(answer: int) -> None:
    """Ex 4.2: the t in 1..999 where the bound's weight w_t = beta_t^2 / (2 sigma_t^2 alpha_t
    (1 - alpha_bar_t)), sigma_t^2 = beta~_t (Ho et al. Eq. 12), is smallest; from diffusers'
    schedule in float64. The minimum is flat, so any t within 0.1 % of it counts."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    betas = sched.betas.double()
    ab = torch.cumprod(1 - betas, 0)
    ts = torch.arange(1, 1000)
    variance = (1 - ab[ts - 1]) / (1 - ab[ts]) * betas[ts]
    w = betas[ts] ** 2 / (2 * variance * (1 - betas[ts]) * (1 - ab[ts]))
    ok = isinstance(answer, int) and 1 <= answer <= 999 and w[answer - 1] <= 1.001 * w.min()
    exercise("smallest w_t at t", ok, True)


def check_posterior_mean(answer: Callable[..., torch.Tensor]) -> None:
    """Ex 4.3: your `posterior_mean(x0, xt, t, s)`, the mean of q(x_s | x_t, x_0) for a jump
    from t to s < t (Ho et al. Eq. 7 with alpha_bar_s for alpha_bar_{t-1}), against
    `DDPMScheduler.step` at 10 steps (jumps of 100) and 1000 steps, its added noise removed."""
    from diffusers import DDPMScheduler

    g = torch.Generator().manual_seed(0)  # s = -1 stands for the data (alpha_bar_{-1} := 1)
    x0, eps = torch.randn(2, 2, 4, 4, 4, generator=g)
    got, expected = [], []
    for n_steps, t in ((10, 900), (10, 500), (10, 100), (10, 0), (1000, 1)):
        sched = DDPMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
        )
        sched.set_timesteps(n_steps)
        ab = sched.alphas_cumprod[t]
        xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
        prev = sched.step(eps, t, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        expected.append(prev - sched._get_variance(t) ** 0.5 * z)
        got.append(_call("posterior_mean", answer, x0, xt, t, max(t - 1000 // n_steps, -1)))
    _verdict("posterior mean", got, expected, atol=1e-4, like="xt")


def check_velocity(
    answer: torch.Tensor, x_data: torch.Tensor, x_noise: torch.Tensor, t: float
) -> None:
    """Ex 5.1: the OT flow's velocity at time t for the pair (x_noise at t = 0, x_data at t = 1):
    x_t = t x_data + (1 - t) x_noise, so u = x_data - x_noise (Lipman et al. 2023, Eq. 23)."""
    exercise("OT velocity", answer, x_data - x_noise, atol=1e-5)


def check_ddim_step(answer: Callable[..., torch.Tensor]) -> None:
    """Ex 5.2: your `ddim_step(eps, x, alpha_bar_t, alpha_bar_s)`, one deterministic DDIM step
    x_s = sqrt(ab_s) x0^ + sqrt(1 - ab_s) eps, x0^ = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t)
    (Song et al. 2021, Eq. 12, eta = 0), against `DDIMScheduler.step` with 10 steps."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    sched.set_timesteps(10)  # 900, 800, ..., 0
    g = torch.Generator().manual_seed(0)
    got, expected = [], []
    for t in (900, 500, 0):
        eps, x = torch.randn(2, 2, 4, 4, 4, generator=g)
        s = t - 100
        ab_s = sched.alphas_cumprod[s] if s >= 0 else sched.final_alpha_cumprod
        expected.append(sched.step(eps, t, x, eta=0.0).prev_sample)
        got.append(_call("ddim_step", answer, eps, x, sched.alphas_cumprod[t], ab_s))
    _verdict("DDIM step", got, expected, atol=1e-5, like="x")


def check_cfg(answer: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Ex 6.1: your `guided(eps_u, eps_c, g)`, classifier-free guidance eps_u + g (eps_c - eps_u)
    (Ho & Salimans 2022, Eq. 6 with w = g - 1), tried at g = 0 (unconditional), 1 (conditional)
    and 7.5 on random predictions."""
    gen = torch.Generator().manual_seed(0)
    eps_u, eps_c = torch.randn(2, 2, 4, 8, 8, generator=gen)
    scales = (0.0, 1.0, 7.5)
    got = [_call("guided", answer, eps_u, eps_c, s) for s in scales]
    expected = [eps_u + s * (eps_c - eps_u) for s in scales]
    _verdict("guided eps", got, expected, atol=1e-5, like="eps_u")


def check_inpaint_blend(answer: Callable[..., torch.Tensor]) -> None:
    """Ex 7.2: your `blend(z, z_image, noise, m, alpha_bar_next)`: m z + (1 - m) q-sample of the
    picture's latent at the next timestep (blended latent diffusion, Avrahami et al. 2023),
    against `DDPMScheduler.add_noise` at t = 900, 500, 0 with a mask of 0s, 1s and a soft edge."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(0)
    z, z_image, noise = torch.randn(3, 1, 4, 8, 8, generator=g)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 4:, 4:], m[..., 3, 3:], m[..., 3:, 3] = 1.0, 0.5, 0.5
    got, expected = [], []
    for t in (900, 500, 0):
        known = sched.add_noise(z_image, noise, torch.tensor([t]))
        expected.append(m * z + (1 - m) * known)
        got.append(_call("blend", answer, z, z_image, noise, m, sched.alphas_cumprod[t]))
    _verdict("inpainting blend", got, expected, atol=1e-5, like="z")


def check_attention_head(answer: Callable[..., torch.Tensor]) -> None:
    """Ex 8.2: your `attention_head(attn, x, context, h)`: head h of a cross-attention layer before
    its output projection, softmax(Q_h K_h^T / sqrt(d)) V_h (Vaswani et al. 2017, Eq. 1), against
    `F.scaled_dot_product_attention` on a diffusers `Attention` layer's projections, every head."""
    import torch.nn.functional as F
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).eval()
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(1, 10, 16, generator=g), torch.randn(1, 5, 12, generator=g)
    with torch.no_grad():
        split = [
            z.view(1, -1, 2, 8).transpose(1, 2)
            for z in (attn.to_q(x), attn.to_k(context), attn.to_v(context))
        ]
        expected = F.scaled_dot_product_attention(*split)  # (1, heads, 10, 8)
        got = [_call("attention_head", answer, attn, x, context, h) for h in range(2)]
    _verdict(
        "attention head", got, [expected[:, h] for h in range(2)], atol=1e-5, like="(1, 10, 8)"
    )


def check_heun_step(answer: Callable[..., torch.Tensor]) -> None:
    """Ex 9.2: your `heun_step(denoiser, x, s, s_next)`: d = (x - D(x; s)) / s, Euler's
    x' = x + (s' - s) d, then x + (s' - s) (d + d') / 2 with d' = (x' - D(x'; s')) / s'
    (Karras et al. 2022, Alg. 1), Euler's x' alone when s' = 0. Against diffusers'
    `HeunDiscreteScheduler.step`, driven through its two calls per step with the eps a U-Net
    would give for the toy mixture's exact denoiser, at the first, a middle and the last step."""
    from diffusers import HeunDiscreteScheduler

    from course_utils.samplers import toy_mixture_score

    sched = HeunDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    sched.set_timesteps(10)
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    calls = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, timestep: object = None) -> torch.Tensor:
        calls.append(float(sigma))
        return x + sigma**2 * toy_mixture_score(x, sigma, means, 0.3)

    g = torch.Generator().manual_seed(0)
    sigmas = torch.cat([sched.sigmas[:1], sched.sigmas[1::2]])  # Heun lists each inner one twice
    got, expected = [], []
    for i in (0, 5, 9):
        s, s_next = sigmas[i], sigmas[i + 1]
        x = torch.randn(64, 2, generator=g) * float((s**2 + 1) ** 0.5)
        sched._step_index = 2 * i  # the scheduler's first call of step i
        eps = (x - denoiser(x, s)) / s
        out = sched.step(eps, sched.timesteps[2 * i], x).prev_sample
        if s_next > 0:  # its second call, at s_next, finishes the step
            out = sched.step(
                (out - denoiser(out, s_next)) / s_next, sched.timesteps[2 * i + 1], out
            )
            out = out.prev_sample
        expected.append(out)
        got.append(_call("heun_step", answer, denoiser, x, s, s_next))
    _verdict("Heun step", got, expected, atol=1e-5, like="x")


def check_rwr_loss(answer: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Ex 10.2: your `rwr_loss(per_sample_losses, rewards, beta)`: (1/B) sum_i w_i l_i with
    w = B softmax(r / beta) (reward-weighted regression, Peng et al. 2019, Eq. 7 with
    self-normalised weights), against `finetune.reward_weights` on several batches and betas."""
    from course_utils.finetune import reward_weights

    g = torch.Generator().manual_seed(0)
    got, expected = [], []
    for batch, beta in ((4, 0.05), (8, 1.0), (16, 0.2)):
        losses = torch.rand(batch, generator=g)
        rewards = torch.randn(batch, generator=g)
        expected.append((reward_weights(rewards, beta) * losses).mean().reshape(1))
        value = _call("rwr_loss", answer, losses, rewards, beta)
        got.append(value.reshape(1) if isinstance(value, torch.Tensor) else value)
    _verdict("RWR loss", got, expected, atol=1e-6, like="a scalar tensor")


def check_load_embedding(
    answer: Callable[..., object], path: str, make_pipe: Callable[[], object]
) -> None:
    """Ex 11.1: your `load_embedding(pipe, path, token)` puts the textual-inversion vector saved in
    `path` into a fresh pipeline (`make_pipe()`) under the new word `token`: the tokenizer knows
    the word as one token, and its row of the token-embedding table is the file's vector."""
    from safetensors.torch import load_file

    saved = next(iter(load_file(str(path)).values())).reshape(-1).float()
    pipe, token = make_pipe(), "<their-shape>"
    _call("load_embedding", answer, pipe, str(path), token)
    vocab = pipe.tokenizer.get_vocab()
    if token not in vocab or pipe.tokenizer.tokenize(f"a {token}")[-1] != token:
        print(f"load_embedding: not yet - the tokenizer has no word {token!r} (see the hint above)")
        return
    row = pipe.text_encoder.get_input_embeddings().weight[vocab[token]].detach().float().cpu()
    exercise("load_embedding", row, saved, atol=1e-6)
