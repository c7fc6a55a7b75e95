"""A whole CLIP (text + vision towers) beside the pipeline, for the similarity demos of 02.

mini-sd's folder holds the vision tower and the projections in `clip/`; the text tower *is* the
pipeline's `text_encoder/` (stored once). SD 1.5's folder has no vision tower: its text encoder
is OpenAI's CLIP ViT-L/14 text tower, so `load_clip(pipe)` takes the whole of that model
("openai/clip-vit-large-patch14") from the local Hugging Face cache when it is there.
CLIP's score of an image-caption pair is the cosine of their projected embeddings, times a
learned temperature (Radford et al. 2021, Fig. 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from course_utils import MINI_SD_PATH

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

OPENAI_CLIP = "openai/clip-vit-large-patch14"  # SD 1.5's text encoder is this model's text tower
# OpenAI's preprocessing (its preprocessor_config.json): 224 px, bicubic, these mean and std
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def load_mini_clip(path: str | Path = MINI_SD_PATH) -> CLIPModel:
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
    model.is_mini_clip = True  # trained on [-1, 1] pixels (images_to_clip_input)
    return model.eval()


def load_clip(pipe: StableDiffusionPipeline) -> CLIPModel | None:
    """The CLIP that goes with `pipe`'s text encoder: mini-sd's own, or OpenAI's ViT-L/14 from
    the local cache (SD 1.5), or None when neither is on this machine (the caller says so).
    It is put on the pipeline's device in its text encoder's dtype (ViT-L/14 has 428 M
    parameters: on a GPU in fp16, 0.86 GB, and fast)."""
    from transformers import CLIPModel

    from course_utils.device import simulation_paused
    from course_utils.models import cached_snapshot, is_mini_sd

    folder = None if is_mini_sd(pipe) else cached_snapshot(OPENAI_CLIP, "config.json")
    if not is_mini_sd(pipe) and (folder is None or not any(folder.glob("*.safetensors"))):
        return None
    with simulation_paused():  # loaded on the CPU, then moved (COURSE_DEVICE=cuda-sim)
        if folder is None:
            clip = load_mini_clip()
        else:
            clip = CLIPModel.from_pretrained(folder, use_safetensors=True).eval()
    return clip.to(pipe.device, pipe.text_encoder.dtype)


def images_to_clip_input(clip: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> what `clip`'s vision tower was trained on: the mini CLIP takes
    [-1, 1] at its own size; OpenAI's CLIP takes a bicubic resize to its image size, normalised
    by OPENAI_MEAN / OPENAI_STD."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor in [0, 1], got {images!r:.80}")
    if getattr(clip, "is_mini_clip", False):
        return images * 2 - 1
    size = clip.config.vision_config.image_size
    x = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bicubic", antialias=True
    ).clamp(0, 1)
    mean, std = (
        torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (OPENAI_MEAN, OPENAI_STD)
    )
    return (x - mean) / std


@torch.no_grad()
def similarity(
    clip: CLIPModel, tokenizer: CLIPTokenizer, images: torch.Tensor, texts: list[str]
) -> torch.Tensor:
    """cos(image_i, text_j) for images (B, 3, H, W) in [0, 1] and texts: a (B, len(texts)) matrix."""
    ids = tokenizer(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    pixels = images_to_clip_input(clip, images).to(clip.device, clip.dtype)
    img = clip.get_image_features(pixel_values=pixels)
    txt = clip.get_text_features(input_ids=ids.to(clip.device))
    img = getattr(img, "pooler_output", img)  # transformers 5: an output whose pooler is projected
    txt = getattr(txt, "pooler_output", txt)
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return (img @ txt.T).float().cpu()


def zero_shot(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    images: torch.Tensor,
    labels: list[str],
    template: str = "a {} shape",
) -> list[str]:
    """The label whose caption `template.format(label)` is most similar to each image."""
    sims = similarity(clip, tokenizer, images, [template.format(label) for label in labels])
    return [labels[i] for i in sims.argmax(dim=1).tolist()]
