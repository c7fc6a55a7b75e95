"""mini-sd's data: captioned pictures of coloured shapes, a judge that reads them back, photos.

Every image is a function of (seed, index): `sample_spec(seed, i)` draws what to draw,
`render(spec)` draws it (4x supersampled, so edges are anti-aliased like a photo's), and
`caption(spec, rng)` writes one of several templates. `judge(image)` reads colour, shape,
background, position and size back from any 64x64 RGB image; it is how the benchmark scores
what the model generates.

`NEW_SHAPES` (a cross) can be drawn but is never sampled: mini-sd never saw one, and notebook 11
teaches it. `detect_shape(image)` tells every drawable shape apart by template matching (IoU
of the picture's foreground with each shape's own mask), where the judge's fill-ratio rule knows
the three trained shapes only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {**COLORS, "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")  # what mini-sd was trained on
NEW_SHAPES = ("cross",)  # drawable, never sampled: not in mini-sd's training pictures or captions
SIZES = {"small": 10.0, "large": 19.0}  # half-width in pixels of a 64x64 image
POSITIONS = {  # centre of a small shape; large ones are always near the centre
    "center": (32, 32),
    "top left": (19, 19),
    "top right": (45, 19),
    "bottom left": (19, 45),
    "bottom right": (45, 45),
}
TEMPLATES = (
    "a {color} {shape}",
    "a {color} {shape} on a {background} background",
    "a {size} {color} {shape}",
    "a {size} {color} {shape} on a {background} background",
    "a {color} {shape} in the {position}",
    "a {size} {color} {shape} in the {position} on a {background} background",
    "{background} background with a {color} {shape}",
)


@dataclass(frozen=True)
class Spec:
    """What one picture shows."""

    color: str
    shape: str
    background: str
    size: str = "large"
    position: str = "center"
    jitter: tuple[int, int] = (0, 0)

    def __post_init__(self):
        for name, value, allowed in (
            ("color", self.color, COLORS),
            ("shape", self.shape, SHAPES + NEW_SHAPES),
            ("background", self.background, BACKGROUNDS),
            ("size", self.size, SIZES),
            ("position", self.position, POSITIONS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
        if self.color == self.background:
            raise ValueError(f"a {self.color} shape on a {self.background} background is invisible")
        if self.size == "large" and self.position != "center":
            raise ValueError("large shapes are always in the center (they fill the picture)")


def sample_spec(seed: int, index: int) -> Spec:
    """The (seed, index)-th picture's content, uniformly over colours/shapes/backgrounds."""
    rng = random.Random(seed * 1_000_003 + index)
    color = rng.choice(list(COLORS))
    background = rng.choice([b for b in BACKGROUNDS if b != color])
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS)) if size == "small" else "center"
    jitter = (rng.randint(-3, 3), rng.randint(-3, 3))
    return Spec(color, rng.choice(SHAPES), background, size, position, jitter)


def _draw(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: int | tuple[int, int, int],
) -> None:
    """Draw one shape of half-width r centred at (cx, cy) (the triangle's box is 2r x 1.8r)."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        q = r * 0.88  # same area feel as the circle
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif shape == "triangle":  # upright
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif shape == "cross":  # a plus sign, arms 0.72 r wide
        w = r * 0.36
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES + NEW_SHAPES)}")


def render(spec: Spec, size: int = SIZE, supersample: int = 4) -> np.ndarray:
    """Draw `spec` as a (size, size, 3) uint8 RGB array."""
    if size < 8:
        raise ValueError(f"image size must be >= 8 pixels, got {size}")
    s = size * supersample / SIZE  # drawing coordinates are in a 64x64 frame
    img = Image.new("RGB", (size * supersample,) * 2, BACKGROUNDS[spec.background])
    cx, cy = POSITIONS[spec.position]
    cx, cy, r = (cx + spec.jitter[0]) * s, (cy + spec.jitter[1]) * s, SIZES[spec.size] * s
    _draw(ImageDraw.Draw(img), spec.shape, cx, cy, r, COLORS[spec.color])
    return np.array(img.resize((size, size), Image.Resampling.BOX))  # writable, for torch


def shape_mask(shape: str, cx: float, cy: float, r: float, supersample: int = 4) -> np.ndarray:
    """(64, 64) bool: where `render` paints `shape` of half-width r at (cx, cy), in pixels of the
    64x64 frame (any real numbers: the detector fits them)."""
    s = supersample
    img = Image.new("L", (SIZE * s,) * 2, 0)
    _draw(ImageDraw.Draw(img), shape, cx * s, cy * s, r * s, 255)
    return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BOX)) >= 128


@cache
def _template(shape: str) -> tuple[float, float, float]:
    """A shape's area per r^2 and its centroid's offset from (cx, cy) per r, measured on a large
    mask (so the detector fits a template by area and centroid, not by a blurred outline)."""
    big = Image.new("L", (2000, 2000), 0)
    _draw(ImageDraw.Draw(big), shape, 1000, 1000, 800, 255)
    ys, xs = np.nonzero(np.asarray(big))
    return len(xs) / 800**2, (xs.mean() - 1000) / 800, (ys.mean() - 1000) / 800


def shape_scores(image: np.ndarray) -> dict[str, float]:
    """IoU of the picture's foreground (`foreground_mask`, at 64x64) with each drawable shape's
    mask, placed at the foreground's centroid and sized to its area: a template match."""
    fg = foreground_mask(_as_64(image))
    if fg.sum() < 12:
        return dict.fromkeys(SHAPES + NEW_SHAPES, 0.0)
    ys, xs = np.nonzero(fg)
    scores = {}
    for shape in SHAPES + NEW_SHAPES:
        area, dx, dy = _template(shape)
        r = float(np.sqrt(fg.sum() / area))
        mask = shape_mask(shape, xs.mean() - dx * r, ys.mean() - dy * r, r)
        scores[shape] = float((mask & fg).sum() / (mask | fg).sum())
    return scores


def detect_shape(image: np.ndarray, min_iou: float = 0.6) -> str | None:
    """The best-matching shape of `shape_scores`, or None when no template reaches `min_iou`
    (no shape, or a blob that is none of them). `image`: (H, W, 3) uint8 or float in [0, 1]."""
    scores = shape_scores(image)
    best = max(scores, key=scores.get)
    return best if scores[best] >= min_iou else None


def caption(spec: Spec, rng: random.Random | None = None, template: str | None = None) -> str:
    """One caption of `spec`, from a random template (or the one given)."""
    template = template or (rng or random).choice(TEMPLATES)
    text = template.format(**spec.__dict__)
    return text.replace("a orange", "an orange").replace("A orange", "An orange")


def parse_prompt(prompt: str) -> dict[str, str]:
    """The colour, shape, background... that a prompt asks for (the benchmark's ground truth)."""
    words = prompt.lower()
    found = {}
    bg = next((b for b in BACKGROUNDS if f"{b} background" in words), None)
    if bg:
        found["background"] = bg
        words = words.replace(f"{bg} background", "")
    for key, table in (
        ("color", COLORS),
        ("shape", SHAPES),
        ("size", SIZES),
        ("position", POSITIONS),
    ):
        hit = [k for k in table if k in words]
        if hit:
            found[key] = max(hit, key=len)
    return found


def _nearest(
    rgb: np.ndarray, table: dict[str, tuple[int, int, int]], exclude: tuple[str, ...] = ()
) -> str:
    names = [n for n in table if n not in exclude]
    d = [np.linalg.norm(rgb - np.array(table[n], dtype=float)) for n in names]
    return names[int(np.argmin(d))]


def _border(px: np.ndarray) -> np.ndarray:
    return np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels farther than 60 (of 255) from the border's median colour — the
    shape, as the judge finds it. `image`: (H, W, 3) uint8 or float in [0, 1], at its own size."""
    px = np.asarray(image)
    px = px.astype(float) if px.dtype == np.uint8 else np.clip(px, 0, 1) * 255
    return np.linalg.norm(px - np.median(_border(px), axis=0), axis=-1) > 60


def _as_64(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) RGB picture, uint8 or float in [0, 1], as 64x64 uint8 (a clear error else)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"want an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.shape[:2] != (SIZE, SIZE):
        arr = np.asarray(Image.fromarray(arr).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return arr


def judge(image: np.ndarray) -> dict[str, str | None]:
    """Read a picture back: background (border median), the shape's colour (median of the
    pixels far from the background), shape (fill ratio of its bounding box: square ~0.97,
    circle ~0.79, triangle ~0.5), position (centroid) and size (bounding-box width).

    `image`: (H, W, 3) uint8 or float in [0, 1], any size (resized to 64x64)."""
    arr = _as_64(image)
    px = arr.astype(float)
    bg_rgb = np.median(_border(px), axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    fg = foreground_mask(arr)
    out = dict(background=background, color=None, shape=None, position=None, size=None)
    if fg.sum() < 12:
        return out
    out["color"] = _nearest(np.median(px[fg], axis=0), COLORS, exclude=(background,))
    ys, xs = np.nonzero(fg)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = fg.sum() / (h * w)
    out["shape"] = "square" if fill > 0.9 else "circle" if fill > 0.64 else "triangle"
    out["size"] = "large" if max(h, w) > 28 else "small"
    cy, cx = ys.mean(), xs.mean()
    if abs(cx - 32) < 7 and abs(cy - 32) < 7:
        out["position"] = "center"
    else:
        out["position"] = ("top" if cy < 32 else "bottom") + " " + ("left" if cx < 32 else "right")
    return out


def prompt_accuracy(
    images: Any, prompts: Sequence[str], keys: Sequence[str] = ("color", "shape", "background")
) -> dict[str, float]:
    """For each key, the fraction of `images` whose judged value equals what its prompt asks for
    (`parse_prompt`), over the prompts that name that key: the course's measure of "did the
    picture follow the prompt". `images`: (B, 3, H, W) tensor in [0, 1] or (H, W, 3) arrays."""
    images = list(images)
    if len(images) != len(prompts) or not images:
        raise ValueError(
            f"need one prompt per image, got {len(images)} images, {len(prompts)} prompts"
        )
    verdicts = [
        judge(im.detach().float().cpu().permute(1, 2, 0).numpy() if hasattr(im, "permute") else im)
        for im in images
    ]
    wanted = [parse_prompt(p) for p in prompts]
    rates = {}
    for key in keys:
        asked = [(v[key], w[key]) for v, w in zip(verdicts, wanted) if key in w]
        if not asked:
            raise ValueError(f"no prompt names a {key}: {list(prompts)[:3]}...")
        rates[key] = sum(got == want for got, want in asked) / len(asked)
    return rates


def make_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, list[Spec]]:
    """n rendered pictures (n, 64, 64, 3) uint8 and their specs, deterministic in (n, seed)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    specs = [sample_spec(seed, i) for i in range(n)]
    return np.stack([render(s) for s in specs]), specs


N_TRAINING, TRAINING_SEED = 20_000, 0  # mini-sd's training pictures: make_dataset(20_000, seed=0)


@lru_cache(maxsize=1)
def _training_specs() -> frozenset[Spec]:
    return frozenset(sample_spec(TRAINING_SEED, i) for i in range(N_TRAINING))


def held_out_dataset(n: int, seed: int = 1) -> tuple[np.ndarray, list[Spec]]:
    """n pictures that mini-sd never saw: drawn like `make_dataset(n, seed)`, skipping every spec
    (content, place and jitter: the same pixels) that is among its training pictures. The space of
    specs is small (~56,000), so a plain other seed repeats ~45% of the training pictures."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed == TRAINING_SEED:
        raise ValueError(f"seed {seed} is the training seed: held-out pictures need another one")
    seen, specs, i = _training_specs(), [], 0
    while len(specs) < n:
        spec = sample_spec(seed, i)
        if spec not in seen:
            specs.append(spec)
        i += 1
    return np.stack([render(s) for s in specs]), specs


def photo_crops(n: int, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """n random crops of the photos that scikit-image ships (cat, astronaut, coffee, rocket),
    each photo first shrunk to a short side of 64-160 px, so the VAE sees real textures."""
    photos = real_photos()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        short = int(rng.integers(size, 161))
        h, w = photo.shape[:2]
        scale = short / min(h, w)
        img = np.asarray(
            Image.fromarray(photo).resize(
                (round(w * scale), round(h * scale)), Image.Resampling.LANCZOS
            )
        )
        y, x = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        out.append(img[y : y + size, x : x + size])
    return np.stack(out)


def real_photos() -> list[np.ndarray]:
    """The four RGB photos shipped inside scikit-image (see NOTICE for their licenses)."""
    from skimage import data

    return [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]
