"""The mini CLIP (text + vision towers) kept beside mini-sd, for the similarity demos of 02.

mini-sd's folder holds the vision tower and the projections in `clip/`; the text tower *is* the
pipeline's `text_encoder/` (stored once). CLIP's score of an image-caption pair is the cosine
of their projected embeddings, times a learned temperature (Radford et al. 2021, Fig. 3).
"""

from __future__ import annotations

from pathlib import Path

import torch

from course_utils import MINI_SD_PATH


def load_mini_clip(path: str | Path = MINI_SD_PATH):
    """A `transformers.CLIPModel` assembled from `clip/` (vision) and `text_encoder/` (text)."""
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel

    path = Path(path)
    if not (path / "clip" / "model.safetensors").is_file():
        raise FileNotFoundError(f"no mini CLIP in {path / 'clip'}; train it with `make train-mini`")
    model = CLIPModel(CLIPConfig.from_pretrained(path / "clip"))
    model.load_state_dict(load_file(path / "clip" / "model.safetensors"), strict=False)
    from transformers.utils import logging as tlogging

    tlogging.disable_progress_bar()
    try:
        text = CLIPTextModel.from_pretrained(path / "text_encoder")
    finally:
        tlogging.enable_progress_bar()
    model.text_model.load_state_dict(text.state_dict())
    return model.eval()


def images_to_clip_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, 64, 64) in [0, 1] -> the mini CLIP's input range [-1, 1] (it was trained on that)."""
    return images * 2 - 1


@torch.no_grad()
def similarity(clip, tokenizer, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """cos(image_i, text_j) for images (B, 3, H, W) in [0, 1] and texts: a (B, len(texts)) matrix."""
    ids = tokenizer(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    img = clip.get_image_features(pixel_values=images_to_clip_input(images))
    txt = clip.get_text_features(input_ids=ids)
    img = getattr(img, "pooler_output", img)  # transformers 5: an output whose pooler is projected
    txt = getattr(txt, "pooler_output", txt)
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return img @ txt.T


def zero_shot(
    clip, tokenizer, images: torch.Tensor, labels: list[str], template: str = "a {} shape"
) -> list[str]:
    """The label whose caption `template.format(label)` is most similar to each image."""
    sims = similarity(clip, tokenizer, images, [template.format(label) for label in labels])
    return [labels[i] for i in sims.argmax(dim=1).tolist()]
