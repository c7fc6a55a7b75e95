"""Every exercise check: a right answer (computed here independently of the check) says
"correct!" and returns True; a wrong one says "not yet" and returns False, never the answer."""

import math

import pytest
import torch

from course_utils import exercises as ex
from course_utils.tokenization import SimpleCLIPTokenizer

tok = SimpleCLIPTokenizer()
e_u, e_c = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.5, 0.1, -0.4])
x0, x1 = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.0, 0.5, -0.5])  # noise, data
# alpha_bar_t of the scaled-linear schedule, in closed form (no diffusers): prod (1 - beta_s)
betas = [(0.00085**0.5 + s / 999 * (0.012**0.5 - 0.00085**0.5)) ** 2 for s in range(1000)]
alpha_bar = [math.prod(1 - b for b in betas[: t + 1]) for t in range(1000)]

CASES = [  # (check, keyword arguments, right answer, wrong answer)
    (ex.check_token_count, dict(prompt="a red circle"), 5, 3),  # start a red circle end
    (ex.check_first_merge, dict(word="lower"), tok.bpe_steps("lower")[0].pair, ("x", "y")),
    (ex.check_truncated_words, dict(prompt="a cat " * 50), len(tok.encode("a cat " * 50)) - 77, 0),
    (ex.check_compression_factor, {}, 48.0, 64.0),  # 3*512*512 / (4*64*64)
    (ex.check_alpha_bar, dict(t=250), round(alpha_bar[250], 4), 0.5),
    (ex.check_snr_half, {}, next(t for t, a in enumerate(alpha_bar) if a / (1 - a) < 1), 500),
    (ex.check_velocity, dict(x_data=x1, x_noise=x0, t=0.3), x1 - x0, x1 + x0),
    (ex.check_cfg, dict(eps_u=e_u, eps_c=e_c, guidance_scale=7.5), e_u + 7.5 * (e_c - e_u), e_c),
]


@pytest.mark.parametrize("check, kwargs, right, wrong", CASES, ids=[c[0].__name__ for c in CASES])
def test_check_accepts_the_right_answer_and_rejects_a_wrong_one(
    check, kwargs, right, wrong, capsys
):
    assert check(answer=right, **kwargs) is None  # nothing to echo under a notebook cell
    assert "correct!" in capsys.readouterr().out
    check(answer=wrong, **kwargs)
    out = capsys.readouterr().out
    assert "not yet" in out and str(right) not in out  # never gives the answer away
