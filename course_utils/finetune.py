"""Changing the weights: LoRA adapters, reward fine-tuning (10_reward_finetuning) and teaching a
new concept (11_personalisation).

LoRA (Hu et al. 2022):  W x  ->  W x + (alpha / r) B A x,  A (r x d_in), B (d_out x r), B = 0 at
                        the start; only A and B train. Added with diffusers' `unet.add_adapter`
                        (a peft `LoraConfig`), saved by `save_lora_weights`, loaded by
                        `pipe.load_lora_weights`: the files a user loads into SD 1.5.
DRaFT-K (Clark et al. 2024, Alg. 1 with truncation K): sample with the environment's Euler
                        steps, keep the autograd graph for the last K only, decode, and
                        ascend the reward's gradient: loss = -mean r(decode(x_1)).
RWR (Peng et al. 2019; Lee et al. 2023): rounds of sampling the model, then the ordinary
                        denoising loss on those samples, each weighted by w_i = B softmax(r /
                        beta)_i: needs reward *values* only, so any reward works, JPEG size too.
                        beta can be chosen per round for a target effective sample size
                        (sum w)^2 / sum w^2 of the standardised rewards (`temperature_for_ess`).
The regulariser:        lambda mean (eps_theta(x_t, t) - eps_ref(x_t, t))^2 at a point of the
                        trajectory, eps_ref the frozen base model (the adapter switched off):
                        a KL-style leash to the base model (Fan et al. 2023, "DPOK", Sec. 4.2).
Textual inversion (Gal et al. 2023, Eq. 2): one new word v*, only its row of the token-embedding
                        table trains, v* = argmin E |eps - eps_theta(z_t, t, c_theta(y))|^2 over
                        captions y that contain it; saved as diffusers' `learned_embeds.safetensors`,
                        read by `pipe.load_textual_inversion`.
DreamBooth's prior preservation (Ruiz et al. 2023, Eq. 2): the same loss on the new pictures plus
                        lambda times it on "class" pictures the frozen model drew itself, so
                        that what it already knew stays (`concept_loss`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from course_utils.gym import GRAD_CHUNK, Environment
from course_utils.sampling import token_ids  # noqa: F401 - re-exported: 11 calls F.token_ids

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # every attention projection of the U-Net
# Training keeps the U-Net's graph for at most GRAPH_ROWS input rows at once and accumulates the
# gradient over pieces (gradient accumulation, as diffusers' training scripts do across steps):
# SD 1.5's U-Net keeps 0.87 GiB a row with its graph at 512^2 (course_utils.meter), 8 rows 7 GiB.
GRAPH_ROWS = 8
DRAFT_CHUNK = GRAPH_ROWS // 2  # DRaFT's samples at a time: classifier-free guidance doubles a row
CROSS_ATTENTION = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")  # text -> picture
RESNET_CONVS = ("conv1", "conv2")  # the two 3x3 convolutions of every ResNet block (08)


def add_lora(
    unet: UNet2DConditionModel,
    rank: int = 8,
    alpha: float | None = None,
    targets: Sequence[str] = LORA_TARGETS,
    seed: int = 0,
) -> list[torch.nn.Parameter]:
    """Freeze `unet` and add a rank-`rank` LoRA adapter to the `targets` projections (diffusers'
    `add_adapter` with a peft `LoraConfig`; A Gaussian, B = 0, so the model starts unchanged).
    alpha defaults to rank (scale alpha / r = 1). Returns the adapter's trainable parameters."""
    from peft import LoraConfig

    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    unet.requires_grad_(False)
    torch.manual_seed(seed)  # peft draws A from the global generator
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    unet.add_adapter(config)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # train the adapter in float32 even in a half-precision U-Net
        p.data = p.data.float()
    return params


def save_lora(pipe: StableDiffusionPipeline, folder: str | Path) -> Path:
    """Save the U-Net's LoRA adapter in diffusers' format (`pytorch_lora_weights.safetensors`,
    keys as diffusers' training scripts write them, with the LoraConfig as metadata so that an
    alpha other than the rank survives); `pipe.load_lora_weights(folder)` reads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    if not getattr(pipe.unet, "peft_config", None):
        raise ValueError("the U-Net has no LoRA adapter to save: call add_lora(pipe.unet) first")
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    folder = Path(folder)
    metadata = pipe.unet.peft_config["default"].to_dict()  # rank and alpha travel with the file
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=layers, unet_lora_adapter_metadata=metadata
    )
    return folder / "pytorch_lora_weights.safetensors"


def load_lora(pipe: StableDiffusionPipeline, folder: str | Path) -> None:
    """`pipe.load_lora_weights(folder)`, without diffusers' notice that the file has no text-encoder
    layers (save_lora writes the U-Net's only, on purpose)."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        pipe.load_lora_weights(folder)
    finally:
        dlogging.set_verbosity(level)


@contextlib.contextmanager
def adapter_off(unet: UNet2DConditionModel) -> Iterator[None]:
    """The frozen base model for the duration of a `with` block (the adapter switched off)."""
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


class Step(NamedTuple):
    """One fine-tuning step's batch: what the loss was made from."""

    loss: torch.Tensor  # the scalar to backpropagate
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], detached, on the CPU
    rewards: torch.Tensor  # (B,), the reward of each image (times the env's reward_scale)


def _check_weight(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def regulariser(env: Environment, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """mean (eps_theta(x, t) - eps_ref(x, t))^2 over every element: how far the adapted model's
    noise prediction has moved from the frozen base model's at (x, t)."""
    model = env.base_model
    eps = model(x, t, **cond)
    with torch.no_grad(), adapter_off(model.pipe.unet):
        eps_ref = model(x, t, **cond)
    return (eps.float() - eps_ref.float()).pow(2).mean()


def _rows(cond: dict, idx: torch.Tensor, n: int) -> dict:
    """The rows `idx` of every per-sample tensor of `cond` (those with n rows)."""
    return {
        k: v[idx.to(v.device)] if torch.is_tensor(v) and len(v) == n else v for k, v in cond.items()
    }


def draft_step(
    env: Environment,
    n: int,
    k: int = 1,
    generator: torch.Generator | None = None,
    kl_weight: float = 0.0,
    **sample_kw: object,
) -> Step:
    """DRaFT-K: n samples with the environment's Euler steps on the flow, the graph kept for the
    last `k` steps only (x enters them detached), decoded with the graph, scored:
    loss = -mean r + kl_weight * regulariser at a random earlier state of the trajectory.

    It back-propagates the loss itself: the gradient lands in the parameters' `.grad` (call
    `optimizer.zero_grad()` before and `optimizer.step()` after), accumulated in pieces so that
    SD 1.5 fits a 16 GB GPU (course_utils.meter; a batch of 8 at once would keep 14 GiB of U-Net
    graph and 22 GiB of decoder graph):
      - the first steps - k steps run the whole batch without a graph; the last k run
        DRAFT_CHUNK samples at a time with theirs;
      - the decoder is checkpointed at x: gym.GRAD_CHUNK images at a time are decoded and scored
        from a detached copy of x, and the gradient g that reaches it flows on through the U-Net
        steps as x.backward(g) (the chain rule, cut at x);
      - the regulariser, a mean, is back-propagated per chunk, weighted by its share of the batch.
    The gradient equals one backward pass of the whole batch's loss (tests/test_finetune.py).
    Returns the loss's value (detached), the images and the rewards. A reward without a
    gradient (JPEG size) raises a ValueError: DRaFT needs a differentiable reward."""
    if not isinstance(k, int) or not 1 <= k <= env.steps:
        raise ValueError(f"k must be an integer in 1 ... {env.steps} (the env's steps), got {k!r}")
    kl_weight = _check_weight("kl_weight", kl_weight)
    x, cond = env.base_model.sample_p0(n, generator=generator, **sample_kw)
    ts = torch.linspace(0, 1, env.steps + 1)
    first = env.steps - k
    states = []
    with torch.no_grad():
        for i in range(first):
            states.append(x)
            x = x + (ts[i + 1] - ts[i]).item() * env.velocity(x, ts[i], **cond)
    j = int(torch.randint(env.steps, (1,), generator=generator)) if kl_weight else None
    images, rewards, penalty = [], [], 0.0
    for idx in torch.arange(n).split(DRAFT_CHUNK):
        xc, cc = x[idx], _rows(cond, idx, n)
        for i in range(first, env.steps):  # the last k steps, with their graph
            if i == j:
                state_j = xc.detach()  # the regulariser's state, when it falls in the last k
            xc = xc + (ts[i + 1] - ts[i]).item() * env.velocity(xc, ts[i], **cc)
        end = xc.detach().requires_grad_(True)  # the checkpoint at x
        for piece in end.split(GRAD_CHUNK):
            picture = env.base_model.postprocess(piece)
            r = env.reward_scale * env.reward(picture)[0].to(x.device)
            if not r.requires_grad:
                raise ValueError(
                    f"the reward {type(env.reward).__name__} has no gradient: DRaFT back-propagates "
                    "it, so it needs a differentiable reward (RWR needs only its values)"
                )
            (-r.sum() / n).backward()  # into end.grad: the decoder's graph of this piece is freed
            images.append(picture.detach().float().cpu())
            rewards.append(r.detach().float().cpu())
        xc.backward(end.grad)  # on through the last k U-Net steps
        if kl_weight:
            at = states[j][idx] if j < first else state_j
            part = kl_weight * regulariser(env, at, ts[j], cc) * len(idx) / n
            part.backward()
            penalty += part.item()
    rewards = torch.cat(rewards)
    loss = -rewards.mean() + penalty
    return Step(loss, torch.cat(images), rewards)


def reward_weights(rewards: torch.Tensor, temperature: float) -> torch.Tensor:
    """w_i = B softmax(r / beta)_i: mean 1, the best samples weigh most; beta -> inf gives plain
    fine-tuning on the model's own samples, beta -> 0 the best sample only."""
    temperature = _check_weight("temperature", temperature)
    if temperature == 0:
        raise ValueError("temperature must be > 0 (it divides the rewards)")
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf: drop invalid samples before weighting")
    return len(r) * torch.softmax(r / temperature, dim=0)


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2 (Kish): n for equal weights, 1 when one sample has all the weight."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError("need a non-empty 1-d tensor of non-negative weights, not all zero")
    return (w.sum() ** 2 / (w**2).sum()).item()


def standardise(rewards: torch.Tensor) -> torch.Tensor:
    """(r - mean r) / std r: rewards in standard deviations of their batch (all zeros when the
    rewards are all equal). The softmax weights do not see the shift; the scale moves into beta."""
    r = torch.as_tensor(rewards, dtype=torch.float32)
    std = r.std() if len(r) > 1 else r.new_zeros(())
    return (r - r.mean()) / std if std > 0 else torch.zeros_like(r)


def _check_target_ess(target_ess: float, n: int) -> None:
    if isinstance(target_ess, bool) or not isinstance(target_ess, (int, float)):
        raise ValueError(f"target_ess must be a number in 1 ... {n}, got {target_ess!r}")
    if not 1 <= target_ess <= n:
        raise ValueError(f"target_ess must be in 1 ... {n} (the batch), got {target_ess!r}")


def temperature_for_ess(rewards: torch.Tensor, target_ess: float, iterations: int = 60) -> float:
    """The beta at which reward_weights(rewards, beta) has effective sample size `target_ess`,
    by bisection on log beta. The ESS grows monotonically with beta, from the number of tied
    best samples at beta -> 0 to n at beta -> inf: with s = 1/beta and A(s) = log sum exp(s r),
    log ESS = 2 A(s) - A(2 s), whose derivative 2 (mean_s r - mean_2s r) <= 0, the tilted mean
    growing with s. A target out of reach returns an end of the bracket [1e-4, 1e4] x the
    rewards' range; equal rewards give n at every beta (returns 1.0)."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    n = len(r)
    _check_target_ess(target_ess, n)
    spread = (r.max() - r.min()).item()
    if spread == 0:
        return 1.0

    lo, hi = math.log(1e-4 * spread), math.log(1e4 * spread)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        too_few = effective_sample_size(torch.softmax(r / math.exp(mid), dim=0)) < target_ess
        lo, hi = (mid, hi) if too_few else (lo, mid)
    return math.exp((lo + hi) / 2)


def weighted_denoising_loss(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text_emb: torch.Tensor,
    weights: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
    backward: bool = False,
) -> torch.Tensor:
    """mean_i w_i |eps_i - eps_theta(sqrt(ab_t) z_i + sqrt(1 - ab_t) eps_i, t_i)|^2 / (4 h w),
    t_i uniform in 0 ... T - 1 (Ho et al. 2020, Alg. 1 weighted per sample): the RWR loss.

    With `backward=True` it back-propagates the loss itself, GRAPH_ROWS samples at a time (each
    piece's share of the mean), and returns the value detached: the same gradient, with one
    piece's U-Net graph alive at a time."""
    b = latents.shape[0]
    if weights.shape != (b,):
        raise ValueError(f"need one weight per latent: {tuple(weights.shape)} for {b} latents")
    t = torch.randint(len(alphas_cumprod), (b,), generator=generator)
    eps = torch.randn(latents.shape, generator=generator)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1).float()
    z_t = ab.sqrt() * latents.detach().float().cpu() + (1 - ab).sqrt() * eps
    dev, dtype = unet.device, unet.dtype
    total = 0.0
    for idx in torch.arange(b).split(GRAPH_ROWS if backward else b):
        emb = text_emb[idx.to(text_emb.device)] if len(text_emb) == b else text_emb
        pred = unet(
            z_t[idx].to(dev, dtype), t[idx].to(dev), encoder_hidden_states=emb.to(dev, dtype)
        ).sample
        per_sample = (pred.float() - eps[idx].to(dev)).pow(2).flatten(1).mean(1)
        part = (weights[idx].to(dev) * per_sample).mean() * (len(idx) / b)  # its share
        if backward:  # the text encoder's graph, if any, serves the next piece too
            part.backward(retain_graph=text_emb.requires_grad)
            part = part.detach()
        total = total + part
    return total


def rwr_round(
    env: Environment,
    n: int,
    optimizer: torch.optim.Optimizer,
    inner_steps: int,
    batch: int = 16,
    temperature: float = 0.05,
    generator: torch.Generator | None = None,
    steps: int = 20,
    target_ess: float | None = None,
) -> Step:
    """One round of reward-weighted regression: n pictures of the env's prompt from the current
    model, drawn with the pipeline's own scheduler (`sampling.generate`, `steps` steps, the env's
    guidance; the env's flow-Euler latents sit off the data, notebook 10), scored by the env's
    reward (any reward: only its values are used), weights w = reward_weights(r, temperature) —
    or, with `target_ess`, w = reward_weights(z, beta) for the standardised rewards z and the
    beta = temperature_for_ess(z, target_ess) of this round (`temperature` is then unused) —
    then `inner_steps` optimizer steps of `weighted_denoising_loss` on random batches of those
    latents. Returns the last loss (detached), the images and the rewards."""
    from course_utils.sampling import generate

    for name, value in (("n", n), ("inner_steps", inner_steps), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if target_ess is not None:
        _check_target_ess(target_ess, n)
    model = env.base_model
    seed = int(torch.randint(2**31, (1,), generator=generator))
    with torch.no_grad():
        out = generate(
            model.pipe,
            [model.prompt] * n,
            steps=steps,
            guidance_scale=model.guidance_scale,
            seed=seed,
        )
    rewards, valid = env.reward(out.images)
    if not valid.all():
        raise ValueError(f"{int((~valid).sum())} of {n} samples have no valid reward")
    rewards = env.reward_scale * rewards.float().cpu()
    if target_ess is None:
        weights = reward_weights(rewards, temperature)
    else:
        z = standardise(rewards)
        weights = reward_weights(z, temperature_for_ess(z, target_ess))
    text_emb = model.preprocess(n=batch)["text_emb"]
    for _ in range(inner_steps):
        idx = torch.randint(n, (batch,), generator=generator)
        optimizer.zero_grad()
        loss = weighted_denoising_loss(
            model.pipe.unet,
            out.latents[idx],
            text_emb,
            weights[idx],
            model.pipe.scheduler.alphas_cumprod,
            generator,
            backward=True,  # GRAPH_ROWS samples' graph at a time
        )
        optimizer.step()
    return Step(loss, out.images, rewards)


def pairwise_distance(images: torch.Tensor) -> torch.Tensor:
    """Mean |x_i - x_j| over pixels for every pair i < j of a batch (B, ...): (B (B - 1) / 2,).
    Its mean over seeds of one prompt measures diversity (0: every seed gives the same picture)."""
    flat = images.detach().float().flatten(1)
    if len(flat) < 2:
        raise ValueError("diversity needs at least two images")
    d = torch.cdist(flat, flat, p=1) / flat.shape[1]
    i, j = torch.triu_indices(len(flat), len(flat), offset=1)
    return d[i, j]


def add_token(
    pipe: StableDiffusionPipeline, token: str, init_word: str | None = None, seed: int = 0
) -> int:
    """Add the new word `token` to the tokenizer and one row for it to the text encoder's
    token-embedding table; return its id. The row starts as `init_word`'s embedding (one token:
    Gal et al.'s coarse descriptor) or, with None, as a draw from N(mean, cov) of the existing rows
    (transformers' `mean_resizing`, seeded by `seed`): a rare word, as DreamBooth uses."""
    from transformers.utils import logging as tlogging

    tok = pipe.tokenizer
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise ValueError(f"token must be one word without spaces, such as '<cross>', got {token!r}")
    if token in tok.get_vocab():
        raise ValueError(
            f"{token!r} is already in the tokenizer: pick a new word, such as '<my-x>'"
        )
    init_id = None
    if init_word is not None:
        ids = tok(init_word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"init_word {init_word!r} is {len(ids)} tokens: pick a one-token word")
        init_id = ids[0]
    tok.add_tokens([token])
    torch.manual_seed(seed)
    level = tlogging.get_verbosity()
    tlogging.set_verbosity_error()  # its note on how new rows are initialised
    try:
        pipe.text_encoder.resize_token_embeddings(len(tok))
    finally:
        tlogging.set_verbosity(level)
    token_id = tok.convert_tokens_to_ids(token)
    if init_id is not None:
        table = pipe.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            table[token_id] = table[init_id]
    return token_id


def embedding_row(pipe: StableDiffusionPipeline, token_id: int) -> torch.nn.Parameter:
    """Make row `token_id` of the token-embedding table the only thing that trains: the table
    requires grad and a hook zeroes every other row's gradient. With Adam (no weight decay) a
    zero gradient is a zero step, so the other 49,408 rows stay bit-identical. Returns the table:
    give it to `torch.optim.Adam`.

    The text encoder trains in float32, as diffusers' `textual_inversion.py` keeps it (only the
    U-Net and the VAE go to half precision): in float16, Adam's eps = 1e-8 rounds to 0, so a row
    with a zero gradient would step by 0 / (0 + 0) = NaN, every frozen row after one step."""
    text_encoder = pipe.text_encoder
    text_encoder.to(torch.float32)
    table = text_encoder.get_input_embeddings().weight
    if not 0 <= token_id < len(table):
        raise ValueError(f"token_id {token_id} is outside the table's {len(table)} rows")
    keep = torch.zeros(len(table), 1, dtype=table.dtype, device=table.device)
    keep[token_id] = 1
    table.requires_grad_(True)
    table.register_hook(lambda grad: grad * keep)
    return table


def save_textual_inversion(pipe: StableDiffusionPipeline, token: str, path: str | Path) -> Path:
    """Save `token`'s learned row as diffusers' textual-inversion file: {token: (1, d) float32} in
    safetensors, as diffusers' `textual_inversion.py` writes `learned_embeds.safetensors`;
    `pipe.load_textual_inversion(path)` adds the token and its row to another pipeline."""
    from safetensors.torch import save_file

    if token not in pipe.tokenizer.get_vocab():
        raise ValueError(f"{token!r} is not in the tokenizer: add_token(pipe, {token!r}) first")
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    row = pipe.text_encoder.get_input_embeddings().weight[token_id].detach().float().cpu()
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save to a .safetensors file, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: row[None].contiguous()}, str(path))
    return path


def concept_loss(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    ids: torch.Tensor,
    prior: tuple[torch.Tensor, torch.Tensor] | None = None,
    prior_weight: float = 1.0,
    generator: torch.Generator | None = None,
    backward: bool = False,
) -> torch.Tensor:
    """E |eps - eps_theta(z_t, t, c_theta(y))|^2 on the new pictures (latents, ids), through the
    text encoder with its graph (textual inversion trains a row of it), plus prior_weight times
    the same loss on `prior` = (latents, ids) of class pictures (DreamBooth, Eq. 2).
    `backward=True` back-propagates each term (in pieces, `weighted_denoising_loss`) and returns
    the value detached: one graph alive at a time, the same gradient."""
    prior_weight = _check_weight("prior_weight", prior_weight)

    def one(z: torch.Tensor, y: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        text_emb = pipe.text_encoder(y.to(pipe.text_encoder.device))[0]
        weights = torch.full((len(z),), weight)
        alphas = pipe.scheduler.alphas_cumprod
        return weighted_denoising_loss(pipe.unet, z, text_emb, weights, alphas, generator, backward)

    loss = one(latents, ids)
    return loss + one(*prior, prior_weight) if prior is not None else loss


def fit_concept(
    pipe: StableDiffusionPipeline,
    optimizer: torch.optim.Optimizer,
    latents: torch.Tensor,
    ids: torch.Tensor,
    steps: int,
    batch: int = 8,
    prior: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    desc: str = "training",
) -> list[float]:
    """`steps` steps of `optimizer` on `concept_loss` over random batches of (latents, ids) and,
    with a prior, as many class pictures: textual inversion (Adam over `embedding_row`) or
    DreamBooth-LoRA (over `add_lora`'s parameters). Call it again to train on: the optimizer
    keeps its state. Deterministic for a seed on the CPU. Returns the losses."""
    from course_utils.viz import progress

    for name, value in (("steps", steps), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if len(latents) != len(ids):
        raise ValueError(f"need one caption per picture: {len(latents)} latents, {len(ids)} ids")
    if prior is not None and len(prior[0]) != len(prior[1]):
        raise ValueError(f"prior: {len(prior[0])} latents for {len(prior[1])} captions")
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in progress(range(steps), desc):
        i = torch.randint(len(latents), (batch,), generator=g)
        pr = None
        if prior is not None:
            j = torch.randint(len(prior[0]), (batch,), generator=g)
            pr = (prior[0][j], prior[1][j])
        optimizer.zero_grad()
        loss = concept_loss(pipe, latents[i], ids[i], pr, generator=g, backward=True)
        optimizer.step()
        losses.append(loss.item())
    return losses
