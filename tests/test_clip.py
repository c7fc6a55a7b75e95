"""course_utils.clip on a tiny OpenAI-shaped CLIP: similarity against transformers' own features,
the input transform, and which CLIP load_clip finds. mini-sd's trained CLIP (each picture picks
its caption; zero-shot accuracy) is checked by notebook 02, cells 20 and 22, in both mini-sd
runs."""

import torch

from conftest import tiny_openai_clip
from course_utils.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    images_to_clip_input,
    load_clip,
    similarity,
)
from course_utils.tokenization import clip_tokenizer


def test_similarity_is_the_cosine_of_the_projected_features():
    clip, tok = tiny_openai_clip(), clip_tokenizer()
    images, texts = torch.rand(3, 3, 64, 64), ["a red circle", "a blue square"]
    sims = similarity(clip, tok, images, texts)
    ids = tok(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        img = clip.get_image_features(pixel_values=images_to_clip_input(clip, images))
        txt = clip.get_text_features(input_ids=ids)
    img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
    expected = torch.nn.functional.cosine_similarity(img[:, None], txt[None], dim=-1)
    assert sims.shape == (3, 2) and torch.allclose(sims, expected, atol=1e-5)


def test_openai_input_is_resized_and_normalised():
    clip, x = tiny_openai_clip(), torch.full((1, 3, 64, 64), 0.5)
    out = images_to_clip_input(clip, x)
    expected = (0.5 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    assert out.shape == (1, 3, 224, 224)
    assert torch.allclose(out[0, :, 100, 100], expected, atol=1e-5)  # a flat image stays flat


def test_load_clip_finds_openai_clip_in_the_cache_for_a_non_mini_pipeline(
    tiny_pipe, openai_clip_home, monkeypatch
):
    monkeypatch.setenv("HF_HOME", str(openai_clip_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    clip = load_clip(tiny_pipe)
    assert clip is not None and clip.config.vision_config.image_size == 224


def test_load_clip_is_none_without_a_vision_tower(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert load_clip(tiny_pipe) is None
