"""Reward fine-tuning helpers against independent references: a saved and re-loaded adapter gives
the in-memory model's images, the weighted loss equals a hand computation, the temperature for a
target effective sample size equals a closed form, DRaFT's graph spans exactly K steps, the JPEG
reward ranks a flat picture above noise.

A test that changes the pipeline changes a copy of the session's tiny one (`copy_of`).
Notebook 11 checks, in every run, what is not repeated here: fit_concept's determinism (cell 18,
equal to the loop by hand), a saved embedding and a saved attention + ResNet-conv adapter reloaded
through diffusers giving the same pictures (cells 28 and 34)."""

import copy
import math

import pytest
import torch

from course_utils import finetune as F
from course_utils import gym
from course_utils.sampling import generate


def copy_of(pipe, own_tokenizer=False):
    """A deep copy of `pipe` that a test may change. It shares `pipe`'s tokenizer (copying one
    costs ~1 s) unless `own_tokenizer`: the copy of a test that adds words needs its own."""
    return copy.deepcopy(pipe, {} if own_tokenizer else {id(pipe.tokenizer): pipe.tokenizer})


def frozen(pipe):
    """`pipe` with its VAE and text encoder frozen (the adapters and new rows train alone)."""
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    return pipe


@pytest.fixture
def pipe(tiny_pipe):
    """A copy to add adapters to (VAE and text encoder frozen), sharing the session's tokenizer;
    teardown checks that no word was added to it (such tests take `token_pipe`)."""
    words = len(tiny_pipe.tokenizer)
    yield frozen(copy_of(tiny_pipe))
    assert len(tiny_pipe.tokenizer) == words, (
        "a word went into the shared tokenizer: use token_pipe"
    )


@pytest.fixture
def token_pipe(tiny_pipe):
    """A copy with a tokenizer of its own, to add words to (VAE and text encoder frozen)."""
    return frozen(copy_of(tiny_pipe, own_tokenizer=True))


def make_env(pipe, reward="images/redness", steps=3, **kw):
    kwargs = dict(pipe=pipe, prompt="a red circle") | kw
    return gym.make("images/stable_diffusion", reward, steps, base_model_kwargs=kwargs)


def perturb(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_lora_starts_as_the_identity_and_only_the_adapter_trains(pipe):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, pipe.text_encoder.config.hidden_size)
    with torch.no_grad():
        before = pipe.unet(x, 10, encoder_hidden_states=emb).sample
    params = F.add_lora(pipe.unet, rank=4)
    with torch.no_grad():
        after = pipe.unet(x, 10, encoder_hidden_states=emb).sample
    assert torch.equal(before, after)  # B = 0
    trainable = [n for n, p in pipe.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and len(trainable) == len(params)
    assert any(".to_q." in n for n in trainable) and any(".to_out.0." in n for n in trainable)
    perturb(params)
    with torch.no_grad():
        changed = pipe.unet(x, 10, encoder_hidden_states=emb).sample
        with F.adapter_off(pipe.unet):
            off = pipe.unet(x, 10, encoder_hidden_states=emb).sample
    assert not torch.allclose(changed, before) and torch.equal(off, before)


def test_saved_adapter_reloads_to_the_same_images(pipe, tiny_pipe, tmp_path):
    """alpha 16 at rank 4 (scale 4): the alpha travels in the file's metadata. Notebook 11, cell
    34, reloads an adapter of scale 1 (alpha = rank)."""
    perturb(F.add_lora(pipe.unet, rank=4, alpha=16.0))
    path = F.save_lora(pipe, tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors" and path.exists()
    fresh = copy_of(tiny_pipe)
    F.load_lora(fresh, tmp_path)
    ours = generate(pipe, "a red circle", steps=4, seed=2).images
    reloaded = generate(fresh, "a red circle", steps=4, seed=2).images
    with F.adapter_off(pipe.unet):
        plain = generate(pipe, "a red circle", steps=4, seed=2).images
    assert (ours - reloaded).abs().max().item() <= 1e-5
    assert (ours - plain).abs().max().item() > 1e-4  # the adapter does change the pictures


def test_save_without_an_adapter_is_a_clear_error(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match="no LoRA adapter"):
        F.save_lora(tiny_pipe, tmp_path)


def test_weighted_loss_equals_a_hand_computation(pipe):
    F.add_lora(pipe.unet, rank=4)
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(3, 77, pipe.text_encoder.config.hidden_size)
    rewards = torch.tensor([0.1, 0.5, -0.2])
    w = F.reward_weights(rewards, 0.3)
    ab = pipe.scheduler.alphas_cumprod
    g = torch.Generator().manual_seed(5)
    t = torch.randint(1000, (3,), generator=g)
    eps = torch.randn(z.shape, generator=g)
    expected = 0.0
    with torch.no_grad():
        for i in range(3):  # one sample at a time, the closed form of q(z_t | z_0)
            zt = ab[t[i]].sqrt() * z[i : i + 1] + (1 - ab[t[i]]).sqrt() * eps[i : i + 1]
            pred = pipe.unet(zt, t[i : i + 1], encoder_hidden_states=emb[i : i + 1]).sample
            expected += w[i] * ((pred - eps[i : i + 1]) ** 2).mean() / 3
        got = F.weighted_denoising_loss(pipe.unet, z, emb, w, ab, torch.Generator().manual_seed(5))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    soft = torch.exp(rewards / 0.3) / torch.exp(rewards / 0.3).sum()
    assert torch.allclose(w, 3 * soft) and w.mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rewards", "temperature", "match"),
    [
        (torch.tensor([0.1, float("nan")]), 0.1, "NaN or inf"),
        (torch.tensor([0.1, 0.2]), 0.0, "temperature must be > 0"),
        (torch.tensor([0.1, 0.2]), -1.0, "temperature must be >= 0"),
        (torch.tensor([0.1, 0.2]), float("inf"), "finite"),
    ],
)
def test_reward_weights_bad_input(rewards, temperature, match):
    with pytest.raises(ValueError, match=match):
        F.reward_weights(rewards, temperature)


@pytest.mark.parametrize(("n", "k", "target"), [(8, 2, 4.0), (16, 1, 2.5), (64, 5, 16.0)])
def test_temperature_for_ess_matches_the_closed_form(n, k, target):
    """k rewards of 1, n - k of 0: with a = e^(1/beta) and m = n - k the weights' ESS is
    (k a + m)^2 / (k a^2 + m), so ESS = E is the quadratic (k^2 - E k) a^2 + 2 k m a + m (m - E)
    = 0, whose root a > 1 gives beta = 1 / log a."""
    m = n - k
    qa, qb, qc = k * k - target * k, 2 * k * m, m * (m - target)
    a = (-qb - math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
    rewards = torch.tensor([1.0] * k + [0.0] * m)
    beta = F.temperature_for_ess(rewards, target)
    assert a > 1 and beta == pytest.approx(1 / math.log(a), rel=1e-9)
    assert F.effective_sample_size(F.reward_weights(rewards, beta)) == pytest.approx(target)
    # the weights see r / beta only: shifted and scaled rewards need beta times the scale
    assert F.temperature_for_ess(3 * rewards - 5, target) == pytest.approx(3 * beta, rel=1e-9)
    z = F.standardise(rewards)
    assert z.mean().abs() < 1e-6 and z.std().item() == pytest.approx(1.0)
    assert F.temperature_for_ess(z, target) == pytest.approx(beta / rewards.std().item(), rel=1e-6)


def test_effective_sample_size_and_its_edges():
    assert F.effective_sample_size(torch.ones(7)) == pytest.approx(7)
    assert F.effective_sample_size(torch.tensor([0.0, 3.0, 0.0])) == pytest.approx(1)
    assert F.effective_sample_size(torch.tensor([1.0, 1.0, 2.0])) == pytest.approx(16 / 6)
    assert F.temperature_for_ess(torch.full((4,), 0.3), 2) == 1.0  # equal rewards: any beta
    assert torch.equal(F.standardise(torch.full((4,), 0.3)), torch.zeros(4))
    for bad in (0.5, 5, True, "2"):
        with pytest.raises(ValueError, match="target_ess must be"):
            F.temperature_for_ess(torch.arange(4.0), bad)
    with pytest.raises(ValueError, match="non-negative"):
        F.effective_sample_size(torch.tensor([1.0, -1.0]))


def test_draft_keeps_the_graph_for_exactly_k_steps(pipe):
    """k = 2 of 3 steps: the first without the graph, the last two with it."""
    k = 2
    params = F.add_lora(pipe.unet, rank=4)
    env = make_env(pipe, steps=3)
    with_grad = []
    hook = pipe.unet.register_forward_hook(
        lambda m, i, o: with_grad.append(torch.is_grad_enabled())
    )
    try:
        step = F.draft_step(env, 2, k=k, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert with_grad == [False] * (3 - k) + [True] * k
    assert all(p.grad is not None for p in params)  # draft_step back-propagated
    assert step.loss.item() == pytest.approx(-step.rewards.mean().item(), abs=1e-6)


def assert_same_gradient(got, expected):
    """Equal up to float32 sums taken in another order: within 1e-3 of the largest entry (the
    pieces differ from one backward pass by ~1e-5 of it here)."""
    scale = max(g.abs().max().item() for g in expected)
    worst = max((a - b).abs().max().item() for a, b in zip(got, expected))
    assert scale > 0 and worst <= 1e-3 * scale, f"max|diff| {worst:.2e} of max|grad| {scale:.2e}"


def draft_in_one_piece(env, n, k, generator, kl_weight):
    """DRaFT-K as one graph for the whole batch (notebook 10's `draft_loss`, plus the leash)."""
    x, cond = env.base_model.sample_p0(n, generator=generator)
    ts, states = torch.linspace(0, 1, env.steps + 1), []
    for i in range(env.steps):
        with torch.set_grad_enabled(i >= env.steps - k):
            states.append(x.detach())
            x = x + (ts[i + 1] - ts[i]).item() * env.velocity(x, ts[i], **cond)
    loss = -env.reward(env.base_model.postprocess(x))[0].mean()
    if kl_weight:
        j = int(torch.randint(env.steps, (1,), generator=generator))
        loss = loss + kl_weight * F.regulariser(env, states[j], ts[j], cond)
    return loss


@pytest.mark.parametrize(("k", "kl_weight", "seed"), [(1, 0.0, 0), (2, 10.0, 0), (2, 10.0, 4)])
def test_draft_in_pieces_has_the_gradient_of_one_backward(pipe, monkeypatch, k, kl_weight, seed):
    """draft_step runs the last k steps DRAFT_CHUNK samples at a time, decodes GRAD_CHUNK at a
    time from a checkpoint at x and back-propagates the leash per chunk (SD 1.5 on a 16 GB GPU):
    the loss and the gradient are those of one backward pass over the batch. Seeds 0 and 4 put
    the leash's state before and inside the last k steps."""
    params = F.add_lora(pipe.unet, rank=4)
    perturb(params)
    env = make_env(pipe, steps=3)
    monkeypatch.setattr(F, "DRAFT_CHUNK", 2)
    monkeypatch.setattr(F, "GRAD_CHUNK", 1)
    whole = draft_in_one_piece(env, 3, k, torch.Generator().manual_seed(seed), kl_weight)
    whole.backward()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    step = F.draft_step(
        env, 3, k=k, generator=torch.Generator().manual_seed(seed), kl_weight=kl_weight
    )
    assert step.loss.item() == pytest.approx(whole.item(), rel=1e-5, abs=1e-7)
    assert_same_gradient([p.grad for p in params], expected)


def test_weighted_loss_in_pieces_has_the_gradient_of_one_backward(pipe, monkeypatch):
    params = F.add_lora(pipe.unet, rank=4)
    perturb(params)
    z = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(5, 77, pipe.text_encoder.config.hidden_size)
    w, ab = torch.tensor([0.5, 1.0, 1.5, 0.2, 1.8]), pipe.scheduler.alphas_cumprod
    whole = F.weighted_denoising_loss(pipe.unet, z, emb, w, ab, torch.Generator().manual_seed(5))
    whole.backward()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    monkeypatch.setattr(F, "GRAPH_ROWS", 2)  # pieces of 2, 2 and 1
    got = F.weighted_denoising_loss(
        pipe.unet, z, emb, w, ab, torch.Generator().manual_seed(5), backward=True
    )
    assert not got.requires_grad and got.item() == pytest.approx(whole.item(), rel=1e-5)
    assert_same_gradient([p.grad for p in params], expected)


def test_draft_with_the_leash_adds_the_regulariser(pipe):
    params = F.add_lora(pipe.unet, rank=4)
    perturb(params)
    env = make_env(pipe, steps=3)
    plain = F.draft_step(env, 2, generator=torch.Generator().manual_seed(0))
    leashed = F.draft_step(env, 2, generator=torch.Generator().manual_seed(0), kl_weight=10.0)
    assert leashed.loss.item() > plain.loss.item()  # the penalty is >= 0 and the adapter moved
    with pytest.raises(ValueError, match="k must be an integer in 1 ... 3"):
        F.draft_step(env, 2, k=4)
    with pytest.raises(ValueError, match="kl_weight must be"):
        F.draft_step(env, 2, kl_weight=float("nan"))


def test_compressibility_ranks_flat_above_noise():
    reward = gym.reward_registry.make("images/compressibility")
    flat = torch.full((1, 3, 64, 64), 0.4)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    r, valid = reward(torch.cat([flat, noise]))
    assert r[0] > r[1] and valid.all()
    import io

    from PIL import Image

    buffer = io.BytesIO()  # the reward is minus the kB of PIL's own JPEG at quality 95
    Image.fromarray((flat[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(
        buffer, format="JPEG", quality=95
    )
    assert r[0].item() == pytest.approx(-buffer.tell() / 1000)
    bad = torch.full((1, 3, 8, 8), float("nan"))
    assert not reward(bad)[1].any()
    with pytest.raises(ValueError, match="JPEG quality"):
        gym.reward_registry.make("images/compressibility", quality=0)


def test_compressibility_has_no_gradient_for_draft(pipe):
    F.add_lora(pipe.unet, rank=4)
    env = make_env(pipe, reward="images/compressibility", steps=2)
    with pytest.raises(ValueError, match="CompressibilityReward has no gradient"):
        F.draft_step(env, 2, generator=torch.Generator().manual_seed(0))


def test_rwr_round_trains_the_adapter(pipe):
    params = F.add_lora(pipe.unet, rank=4)
    before = [p.detach().clone() for p in params]
    env = make_env(pipe, reward="images/compressibility", steps=2, guidance_scale=1.0)
    opt = torch.optim.AdamW(params, lr=1e-3)
    step = F.rwr_round(
        env, 4, opt, inner_steps=2, batch=2, generator=torch.Generator().manual_seed(0), steps=2
    )
    assert step.images.shape == (4, 3, 64, 64) and step.rewards.shape == (4,)
    assert any(not torch.equal(a, b) for a, b in zip(before, params))
    with pytest.raises(ValueError, match="inner_steps must be an integer >= 1"):
        F.rwr_round(env, 4, opt, inner_steps=0)
    with pytest.raises(ValueError, match="target_ess must be in 1 ... 4"):
        F.rwr_round(env, 4, opt, inner_steps=1, target_ess=8)
    after_one = [p.detach().clone() for p in params]
    step = F.rwr_round(
        env,
        4,
        opt,
        inner_steps=1,
        batch=2,
        generator=torch.Generator().manual_seed(1),
        steps=2,
        target_ess=2,
    )  # beta chosen for the round: the standardised rewards' weights have ESS 2
    beta = F.temperature_for_ess(F.standardise(step.rewards), 2)
    w = F.reward_weights(F.standardise(step.rewards), beta)
    assert F.effective_sample_size(w) == pytest.approx(2, rel=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(after_one, params))


def test_pairwise_distance_is_the_mean_abs_difference():
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    d = F.pairwise_distance(x)
    brute = [(x[i] - x[j]).abs().mean() for i in range(4) for j in range(i + 1, 4)]
    assert torch.allclose(d, torch.stack(brute), atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        F.pairwise_distance(x[:1])


# --- 11: teaching a new concept -------------------------------------------------------------


def test_add_token_appends_one_row_initialised_from_the_word(token_pipe):
    pipe = token_pipe
    n = len(pipe.tokenizer)
    table_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    token_id = F.add_token(pipe, "<cross>", init_word="square")
    table = pipe.text_encoder.get_input_embeddings().weight
    assert token_id == n and len(pipe.tokenizer) == n + 1 and len(table) == n + 1
    assert torch.equal(table[:n], table_before)
    square = pipe.tokenizer("square", add_special_tokens=False).input_ids[0]
    assert torch.equal(table[token_id], table[square])
    assert pipe.tokenizer.tokenize("a red <cross>") == ["a</w>", "red</w>", "<cross>"]


@pytest.mark.parametrize(
    "token, init_word, match",
    [("a", None, "already in the tokenizer"), ("<a b>", None, "without spaces"),
     ("<x>", "hello world", "2 tokens")],
)  # fmt: skip
def test_add_token_bad_input(pipe, token, init_word, match):  # and adds nothing: pipe's teardown
    with pytest.raises(ValueError, match=match):
        F.add_token(pipe, token, init_word=init_word)


def concept_batch(pipe, n=4, token="<cross>"):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(n, 4, 8, 8, generator=g)
    return latents, F.token_ids(pipe, [f"a red {token}"] * n)


def test_textual_inversion_changes_exactly_one_row(token_pipe):
    pipe = token_pipe
    token_id = F.add_token(pipe, "<cross>", init_word="square")
    pipe.unet.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in pipe.text_encoder.named_parameters()}
    unet_before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    table = F.embedding_row(pipe, token_id)
    table_before = table.detach().clone()
    opt = torch.optim.Adam([table], lr=0.05)
    losses = F.fit_concept(pipe, opt, *concept_batch(pipe), steps=5, batch=2)
    assert len(losses) == 5
    changed = (table.detach() != table_before).any(1)
    assert changed.nonzero().flatten().tolist() == [token_id]
    for name, p in pipe.text_encoder.named_parameters():
        if p is not table:
            assert torch.equal(p, before[name]), name
    assert all(torch.equal(p, unet_before[n]) for n, p in pipe.unet.named_parameters())


def half_copy(pipe):
    """A copy in float16 (SD 1.5 on a GPU), with a tokenizer of its own."""
    half = copy_of(pipe, own_tokenizer=True)
    for module in (half.unet, half.vae, half.text_encoder):
        module.to(torch.float16)
    return half


def test_textual_inversion_in_float16_keeps_every_row_finite(tiny_pipe):
    """Notebook 11's loop as it was, with the model in float16 (SD 1.5 on a GPU): Adam's eps =
    1e-8 is 0 in float16, so every row with a zero gradient steps by 0/0 = NaN. embedding_row
    trains the text encoder in float32, as diffusers' textual_inversion.py does."""
    pipe = half_copy(tiny_pipe)
    token_id = F.add_token(pipe, "<cross>", init_word="square")
    latents, ids = concept_batch(pipe, n=2)
    table = pipe.text_encoder.get_input_embeddings().weight  # the old way: the table in float16
    keep = torch.zeros(len(table), 1, dtype=table.dtype)
    keep[token_id] = 1
    table.requires_grad_(True)
    hook = table.register_hook(lambda grad: grad * keep)
    F.fit_concept(pipe, torch.optim.Adam([table], lr=0.02), latents, ids, steps=1, batch=2)
    assert torch.isnan(table).any(1).sum() > len(table) - 2  # every frozen row is NaN
    hook.remove()

    pipe = half_copy(tiny_pipe)
    token_id = F.add_token(pipe, "<cross>", init_word="square")
    table = F.embedding_row(pipe, token_id)
    before = table.detach().clone()
    F.fit_concept(pipe, torch.optim.Adam([table], lr=0.02), latents, ids, steps=2, batch=2)
    assert table.dtype == torch.float32 and pipe.unet.dtype == torch.float16
    assert torch.isfinite(table).all()
    assert (table.detach() != before).any(1).nonzero().flatten().tolist() == [token_id]


def test_fit_concept_lowers_the_loss(token_pipe):
    """20 steps of a LoRA on two pictures: their loss at 32 fixed draws of (t, noise) falls by
    more than 5 % (by 10-14 % over fit_concept's seeds; the noisy training losses themselves need
    ~40 steps to show it). Deterministic for a seed: notebook 11, cell 18."""
    pipe = token_pipe
    F.add_token(pipe, "<cross>")
    opt = torch.optim.Adam(F.add_lora(pipe.unet, rank=4), lr=1e-2)
    latents, ids = concept_batch(pipe, n=2)

    def loss_at_fixed_draws():
        with torch.no_grad():
            g = torch.Generator().manual_seed(100)
            return F.concept_loss(pipe, latents.repeat(16, 1, 1, 1), ids.repeat(16, 1), generator=g)

    before = loss_at_fixed_draws()
    losses = F.fit_concept(pipe, opt, latents, ids, steps=20, batch=2)
    assert len(losses) == 20 and loss_at_fixed_draws() < 0.95 * before


def test_prior_adds_the_class_loss(token_pipe):
    pipe = token_pipe
    F.add_token(pipe, "<cross>")
    latents, ids = concept_batch(pipe, n=2)
    prior = (torch.randn(2, 4, 8, 8), F.token_ids(pipe, ["a blue square"] * 2))

    def loss(*args, **kw):
        return F.concept_loss(pipe, *args, generator=torch.Generator().manual_seed(3), **kw)

    with torch.no_grad():
        alone = loss(latents, ids)
        both = loss(latents, ids, prior=prior, prior_weight=0.5)
        g = torch.Generator().manual_seed(3)
        F.concept_loss(pipe, latents, ids, generator=g)  # the same draws as inside `both`
        emb = pipe.text_encoder(prior[1])[0]
        ones, alphas = torch.ones(2), pipe.scheduler.alphas_cumprod
        class_loss = F.weighted_denoising_loss(pipe.unet, prior[0], emb, ones, alphas, g)
    assert torch.allclose(both, alone + 0.5 * class_loss, atol=1e-6)
    with pytest.raises(ValueError, match="prior_weight must be a finite"):
        loss(latents, ids, prior=prior, prior_weight=float("nan"))


def test_saved_embedding_is_diffusers_file_format(token_pipe, tiny_pipe, tmp_path):
    """{token: (1, d) float32 row}, the word's row, as diffusers' textual_inversion.py writes it.
    Reloaded through diffusers' load_textual_inversion: notebook 11, cell 28 (same pictures), and
    test_exercises.py's check_load_embedding case (under another word, the same row)."""
    from safetensors.torch import load_file

    pipe = token_pipe
    token_id = F.add_token(pipe, "<cross>")
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[token_id].mul_(3.0)
    path = F.save_textual_inversion(pipe, "<cross>", tmp_path / "learned_embeds.safetensors")
    saved = load_file(path)
    assert list(saved) == ["<cross>"] and saved["<cross>"].shape == (1, 32)
    assert saved["<cross>"].dtype == torch.float32
    assert torch.equal(
        saved["<cross>"][0], pipe.text_encoder.get_input_embeddings().weight[token_id]
    )
    with pytest.raises(ValueError, match="not in the tokenizer"):
        F.save_textual_inversion(tiny_pipe, "<star>", tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=".safetensors"):
        F.save_textual_inversion(pipe, "<cross>", tmp_path / "x.bin")


def test_conv_and_attention_lora_adapts_exactly_its_targets(pipe):
    """CROSS_ATTENTION + RESNET_CONVS: the ResNet convs and cross-attention, not self-attention.
    Saved and reloaded through diffusers to the same pictures: notebook 11, cell 34."""
    F.add_lora(pipe.unet, rank=4, targets=F.CROSS_ATTENTION + F.RESNET_CONVS)
    names = [n for n, p in pipe.unet.named_parameters() if p.requires_grad]
    assert any(".conv1." in n for n in names) and any(".attn2.to_k." in n for n in names)
    assert not any(".attn1." in n for n in names)
