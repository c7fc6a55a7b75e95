"""Every exercise check: a right answer (computed here independently of the check) says
"correct!" and returns True; a wrong one says "not yet" and returns False, never the answer."""

import copy
import math

import pytest
import torch

from course_utils import exercises as ex
from course_utils import finetune as F
from course_utils.tokenization import SimpleCLIPTokenizer

tok = SimpleCLIPTokenizer()
x0, x1 = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.0, 0.5, -0.5])  # noise, data
# alpha_bar_t of the scaled-linear schedule, in closed form (no diffusers): prod (1 - beta_s)
betas = [(0.00085**0.5 + s / 999 * (0.012**0.5 - 0.00085**0.5)) ** 2 for s in range(1000)]
alpha_bar = [math.prod(1 - b for b in betas[: t + 1]) for t in range(1000)]


def posterior_mean(x0, xt, t, s):  # Ho et al. Eq. 7 for a jump t -> s, from the closed form above
    ab_s = alpha_bar[s] if s >= 0 else 1.0  # s = -1: the data
    alpha = alpha_bar[t] / ab_s
    return (ab_s**0.5 * (1 - alpha) * x0 + alpha**0.5 * (1 - ab_s) * xt) / (1 - alpha_bar[t])


def kl_weight(t):  # Ho et al. Eq. 12 with sigma_t^2 = beta~_t, in closed form
    beta_tilde = (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t]) * betas[t]
    return betas[t] ** 2 / (2 * beta_tilde * (1 - betas[t]) * (1 - alpha_bar[t]))


def ddim_step(eps, x, ab_t, ab_s):  # Song et al. 2021, Eq. 12 with eta = 0
    return ab_s**0.5 * (x - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5 + (1 - ab_s) ** 0.5 * eps


def blend(z, z_image, noise, m, ab):  # Avrahami et al. 2023, with 04's closed form
    return m * z + (1 - m) * (ab**0.5 * z_image + (1 - ab) ** 0.5 * noise)


def heun_step(D, x, s, s_next):  # Karras et al. 2022, Alg. 1 (the trapezoid), written here again
    d = (x - D(x, s)) / s
    x_next = x + (s_next - s) * d
    if s_next == 0:
        return x_next
    return x + (s_next - s) * (d + (x_next - D(x_next, s_next)) / s_next) / 2


def attention_head(attn, x, context, h):  # Vaswani et al. 2017, Eq. 1, one head
    d = attn.to_q.out_features // attn.heads
    cols = slice(h * d, (h + 1) * d)
    q, k, v = attn.to_q(x)[..., cols], attn.to_k(context)[..., cols], attn.to_v(context)[..., cols]
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v


def weights_mb(module):
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20


def reparameterised(moments, eps):
    mean, logvar = moments.chunk(2, dim=1)
    return mean + (0.5 * logvar.clamp(-30, 20)).exp() * eps


keep = torch.tensor([1] * 5 + [0] * 72)  # "a red circle": start, 3 words, end
padded_causal = torch.tensor(
    [[0.0 if j <= i and j < 5 else float("-inf") for j in range(77)] for i in range(77)]
)


class FromFixture(str):
    """A keyword argument of a case that the named fixture supplies when the case runs: the
    pipelines of check_load_embedding are made when its case runs (copies of the session's tiny
    pipeline), not at import on every xdist worker."""


@pytest.fixture(scope="module")
def colleague_embedding(tiny_pipe, tmp_path_factory):
    """Someone else's textual-inversion file: a word added to a copy of the tiny pipeline."""
    pipe = copy.deepcopy(tiny_pipe)
    F.add_token(pipe, "<cross>", seed=5)
    path = tmp_path_factory.mktemp("colleague") / "learned_embeds.safetensors"
    return F.save_textual_inversion(pipe, "<cross>", path)


@pytest.fixture
def make_fresh_pipe(tiny_pipe):
    """check_load_embedding's `make_pipe`: a new copy of the tiny pipeline at every call (the
    answer under test adds a word to it)."""
    return lambda: copy.deepcopy(tiny_pipe)


CASES = [  # (check, keyword arguments, right answer, wrong answer)
    (  # adding the word alone gives it a random row, not the colleague's vector
        ex.check_load_embedding,
        dict(path=FromFixture("colleague_embedding"), make_pipe=FromFixture("make_fresh_pipe")),
        lambda pipe, path, token: pipe.load_textual_inversion(path, token=token),
        lambda pipe, path, token: F.add_token(pipe, token),
    ),
    (
        ex.check_weights_mb,
        {},
        weights_mb,
        lambda m: sum(p.numel() for p in m.parameters()) * 4 / 2**20,
    ),
    (ex.check_decode, {}, tok.decode, lambda ids: " ".join(map(str, ids))),
    (
        ex.check_padding_mask,
        dict(attention_mask=keep),
        padded_causal,
        torch.full((77, 77), float("-inf")).triu(1),  # causal only: the padding keys still open
    ),
    (ex.check_reparameterised_sample, {}, reparameterised, lambda m, e: m[:, :4] + m[:, 4:] * e),
    (ex.check_token_count, dict(prompt="a red circle"), 5, 3),  # start a red circle end
    (ex.check_first_merge, dict(word="lower"), tok.bpe_steps("lower")[0].pair, ("x", "y")),
    (ex.check_truncated_words, dict(prompt="a cat " * 50), len(tok.encode("a cat " * 50)) - 77, 0),
    (ex.check_compression_factor, {}, 48.0, 64.0),  # 3*512*512 / (4*64*64)
    (ex.check_alpha_bar, dict(t=250), round(alpha_bar[250], 4), 0.5),
    (ex.check_min_kl_weight, {}, min(range(1, 1000), key=kl_weight), 999),
    (ex.check_snr_half, {}, next(t for t, a in enumerate(alpha_bar) if a / (1 - a) < 1), 500),
    (  # the one-step formula (s = t - 1 always) is right only for the 1000-step case
        ex.check_posterior_mean,
        {},
        posterior_mean,
        lambda x0, xt, t, s: posterior_mean(x0, xt, t, t - 1),
    ),
    (ex.check_velocity, dict(x_data=x1, x_noise=x0, t=0.3), x1 - x0, x1 + x0),
    (  # the Euler step in x itself (not in x / sqrt(alpha_bar)) is not DDIM
        ex.check_ddim_step,
        {},
        ddim_step,
        lambda eps, x, ab_t, ab_s: x + ((1 - ab_s) ** 0.5 - (1 - ab_t) ** 0.5) * eps,
    ),
    (  # the known region pasted back clean, not noised to the next step's level
        ex.check_inpaint_blend,
        {},
        blend,
        lambda z, z_image, noise, m, ab: m * z + (1 - m) * z_image,
    ),
    (  # without the 1 / sqrt(d) scale
        ex.check_attention_head,
        {},
        attention_head,
        lambda attn, x, c, h: attention_head(attn, x * 8**0.5, c, h),
    ),
    (ex.check_cfg, {}, lambda u, c, g: u + g * (c - u), lambda u, c, g: c + g * (c - u)),
    (  # unweighted: plain fine-tuning on the samples
        ex.check_rwr_loss,
        {},
        lambda losses, r, beta: (len(r) * torch.softmax(r / beta, dim=0) * losses).mean(),
        lambda losses, r, beta: losses.mean(),
    ),
    (  # Euler's step alone: first order
        ex.check_heun_step,
        {},
        heun_step,
        lambda D, x, s, s_next: x + (s_next - s) * (x - D(x, s)) / s,
    ),
]


@pytest.mark.parametrize("check, kwargs, right, wrong", CASES, ids=[c[0].__name__ for c in CASES])
def test_check_accepts_the_right_answer_and_rejects_a_wrong_one(
    check, kwargs, right, wrong, capsys, request
):
    kwargs = {
        k: request.getfixturevalue(v) if isinstance(v, FromFixture) else v
        for k, v in kwargs.items()
    }
    assert check(answer=right, **kwargs) is None  # nothing to echo under a notebook cell
    assert "correct!" in capsys.readouterr().out
    check(answer=wrong, **kwargs)
    out = capsys.readouterr().out
    assert "not yet" in out and str(right) not in out  # never gives the answer away


def test_a_crashing_answer_is_one_line_not_a_traceback(capsys):
    ex.check_decode(answer=lambda ids: 1 / 0)
    assert (
        capsys.readouterr().out.strip()
        == "decode: your function raised ZeroDivisionError: division by zero"
    )
