"""SD 1.5's cost of a notebook, counted on a CPU with mini-sd (issue 28).

A notebook run with `COURSE_METER=<folder>` records every call of the pipeline's U-Net, VAE
encoder and decoder and text encoder (`load_pipeline` attaches the recorder): its batch, latent
side, dtype, whether it builds a graph for gradients, which graphs are still open (built, not yet
back-propagated), and how many models are alive. `estimate` converts those calls to Stable
Diffusion 1.5 at 512x512 (4x64x64 latents) in float16 on a GPU:

    memory  the weights of the live models in float16, plus, for the call that needs most, its
            activations and the saved activations of every graph still open. On a GPU
            `load_pipeline` slices the VAE (one image at a time), and so does the estimate. The activations
            are measured, not guessed: SD 1.5's own modules run on fake tensors (no memory
            used) under torch's `MemTracker` (torch.distributed._tools.mem_tracker), once per
            (part, batch, side, gradient) and cached.
    time    each call's FLOPs (torch's `FlopCounterMode`, same fake modules; a call with a graph
            adds its backward pass) at a T4's measured throughput. The throughput is diffusers'
            own benchmark of SD 1.5 in fp16, SDPA attention, 50 steps: 6.9 it/s at batch 1 and
            1.79 it/s at batch 4 on a T4, one it = one U-Net call on a guidance batch of 2 or 8
            (huggingface/diffusers, docs/source/en/optimization/torch2.0.md, "T4 (batch size:
            1)" and "(batch size: 4)", torch 2.0, no compile). So a U-Net call on b samples at
            64x64 costs max(1/6.9, b / (8 * 1.79)) seconds: a floor for small batches, then
            0.070 s a sample. Other parts and sizes scale by their FLOPs.

What the meter does not see: CLIP models loaded outside the pipeline (02), tensors a cell keeps
on the GPU between calls (images, latents: small beside the weights), the CUDA context (~0.3-0.5
GiB) and the allocator's fragmentation. The estimates are lower bounds in that sense; the
budgets (issue 28: 14 GiB on a 16 GB T4, 10 minutes) leave room for them.
"""

from __future__ import annotations

import functools
import json
import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

ENV, ENV_NOTEBOOK = "COURSE_METER", "COURSE_METER_NOTEBOOK"
PARTS = ("unet", "vae.encoder", "vae.decoder", "text_encoder")
SD15_SIDE = 64  # SD 1.5's latent side at 512x512
BUDGET_GIB, BUDGET_MINUTES = 14.0, 10.0  # issue 28: a 16 GB T4, ten minutes
T4_FLOOR_S, T4_PER_SAMPLE_S = 1 / 6.9, 1 / (8 * 1.79)  # diffusers' T4 benchmark, see above
GiB = 2**30


# --- recording ----------------------------------------------------------------------------------
Hook = Callable[..., None]


class Recorder:
    """Appends one JSON line per metered call to `<folder>/<notebook>.jsonl`."""

    def __init__(self, folder: str | os.PathLike, notebook: str):
        self.path = Path(folder) / f"{notebook}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.live: dict[str, weakref.WeakSet] = {p: weakref.WeakSet() for p in PARTS}
        self.open: dict[int, tuple[str, int, int]] = {}  # graphs built, not yet back-propagated
        self._next = 0

    def attach(self, pipe: StableDiffusionPipeline) -> None:
        """Hook the pipeline's four parts (copies made later with deepcopy keep the hooks)."""
        native, factor = pipe.unet.config.sample_size, pipe.vae_scale_factor
        for part, module in (
            ("unet", pipe.unet),
            ("vae.encoder", pipe.vae.encoder),
            ("vae.decoder", pipe.vae.decoder),
            ("text_encoder", pipe.text_encoder),
        ):
            module.register_forward_pre_hook(self._before(part, native, factor), with_kwargs=True)
            module.register_forward_hook(self._after())

    def _before(self, part: str, native: int, factor: int) -> Hook:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("sample", kwargs.get("input_ids"))
            side = {"vae.encoder": x.shape[-1] // factor, "text_encoder": 0}.get(part, x.shape[-1])
            batch, side = int(x.shape[0]), int(side)
            grad = torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in module.parameters())
            )
            self.live[part].add(module)
            module._meter_call = (part, batch, side, grad)
            self._write(
                part=part, batch=batch, side=side, native=native, grad=grad,
                dtype=str(next(module.parameters()).dtype).removeprefix("torch."),
                open=list(self.open.values()), live={p: len(s) for p, s in self.live.items()},
            )  # fmt: skip

        return hook

    def _after(self) -> Hook:
        def hook(module: torch.nn.Module, args: tuple, output: object) -> None:
            part, batch, side, grad = module._meter_call
            out = _output(output)
            if grad and isinstance(out, torch.Tensor) and out.requires_grad:
                key, self._next = self._next, self._next + 1
                self.open[key] = (part, batch, side)
                out.register_hook(functools.partial(self._closed, key))  # back-propagated
                weakref.finalize(out, self._closed, key)  # or dropped without a backward

        return hook

    def _closed(self, key: int, *_: object) -> None:
        self.open.pop(key, None)

    def _write(self, **record: object) -> None:
        record["cell"] = _cell()
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _cell() -> int | None:
    """The In[] number of the notebook cell that made the call (None outside IPython): which
    cells cost SD 1.5 most. (IPython's execution_count is already the next cell's while one runs;
    its input history `In` holds the running cell last.)"""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else len(shell.user_ns.get("In", [""])) - 1


_RECORDERS: dict[tuple[str, str], Recorder] = {}


def attach_if_asked(pipe: StableDiffusionPipeline) -> None:
    """`load_pipeline`'s hook: meter the pipeline when COURSE_METER names a folder and
    COURSE_METER_NOTEBOOK the notebook (`make test`'s run 1 sets both)."""
    folder, notebook = os.environ.get(ENV), os.environ.get(ENV_NOTEBOOK)
    if folder and notebook:
        key = (folder, notebook)
        if key not in _RECORDERS:
            _RECORDERS[key] = Recorder(folder, notebook)
        _RECORDERS[key].attach(pipe)


def read(path: str | os.PathLike) -> list[dict]:
    """The records of one notebook's .jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _output(out: object) -> object:
    """The tensor a part returns (diffusers' and transformers' output classes unwrapped)."""
    out = out[0] if isinstance(out, (tuple, list)) else out
    return getattr(out, "sample", getattr(out, "last_hidden_state", out))


# --- SD 1.5 on fake tensors ---------------------------------------------------------------------
TABLE = Path(__file__).with_name("sd15_cost.json")  # `python scripts/sd15_cost.py table` writes it


@functools.cache
def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=False)


@functools.cache
def _sd15_module(part: str) -> torch.nn.Module:
    """One part of SD 1.5 in float16 on fake tensors (no memory, no weights; the U-Net ~10 s)."""
    from transformers import CLIPTextModel

    from course_utils.mini.arch import build_unet, build_vae, text_config

    default = torch.get_default_dtype()
    try:  # built in float16 (`.half()` cannot swap fake parameters)
        torch.set_default_dtype(torch.float16)
        with _fake_mode():
            if part == "unet":
                return build_unet("sd15").eval()
            if part == "text_encoder":
                return CLIPTextModel(text_config("sd15")).eval()
            vae = build_vae("sd15").eval()
            return vae.encoder if part == "vae.encoder" else vae.decoder
    finally:
        torch.set_default_dtype(default)


def _inputs(part: str, batch: int, grad: bool):
    side = SD15_SIDE
    if part == "unet":
        return (torch.randn(batch, 4, side, side, dtype=torch.half, requires_grad=grad),
                torch.tensor(500), torch.randn(batch, 77, 768, dtype=torch.half))  # fmt: skip
    if part == "vae.encoder":
        return (torch.randn(batch, 3, 8 * side, 8 * side, dtype=torch.half, requires_grad=grad),)
    if part == "vae.decoder":
        return (torch.randn(batch, 4, side, side, dtype=torch.half, requires_grad=grad),)
    return (torch.randint(0, 49408, (batch, 77)),)


def _activation(snapshot: dict) -> float:
    """Bytes of a MemTracker snapshot that are neither weights nor weights' gradients."""
    skip = ("PARAM", "BUFFER", "GRAD")
    return sum(v for per_type in snapshot.values() for k, v in per_type.items()
               if k != "Total" and k.name not in skip)  # fmt: skip


def measure_call(part: str, batch: int, grad: bool) -> dict[str, float]:
    """One call of SD 1.5's `part` at 512x512 on fake float16 tensors (slow: up to ~2 min on a
    CPU): the activation bytes at its peak (forward, and backward when `grad`), the bytes its
    graph keeps until back-propagated, and its FLOPs (forward + backward). An upper bound for
    the graphs the course builds (reward guidance, DRaFT, LoRA and textual inversion, where most
    weights are frozen): activations are saved and FLOPs counted as if every weight were
    trained; the weights' own gradients are not counted (the course trains few numbers)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils.flop_counter import FlopCounterMode

    module = _sd15_module(part)
    with _fake_mode():
        args = _inputs(part, batch, grad and part != "text_encoder")
        tracker, flops = MemTracker(), FlopCounterMode(display=False)
        tracker.track_external(module)
        with tracker, flops, torch.set_grad_enabled(grad):
            out = _output(module(*args))
            kept = _activation(tracker.get_tracker_snapshot("current")) if grad else 0.0
            if grad:
                out.float().pow(2).mean().backward()
        peak = max(_activation(tracker.get_tracker_snapshot("peak")), kept)
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    return {"peak": peak, "kept": kept, "flops": float(flops.get_total_flops()), "weights": weights}


def build_table() -> dict:
    """Every part, with and without a graph, measured at batch 1 and 2: a cost per sample and a
    fixed part (activations and FLOPs are linear in the batch)."""
    table = {"latent_side": SD15_SIDE, "dtype": "float16", "torch": torch.__version__, "parts": {}}
    for part in PARTS:
        rows = {}
        for grad in (False, True):
            one, two = measure_call(part, 1, grad), measure_call(part, 2, grad)
            rows["grad" if grad else "no_grad"] = {
                key: {"per_sample": two[key] - one[key], "fixed": 2 * one[key] - two[key]}
                for key in ("peak", "kept", "flops")
            }
        table["parts"][part] = {"weights": one["weights"], **rows}
    return table


@functools.cache
def table() -> dict:
    """The committed table of SD 1.5's per-call costs (`build_table`'s output)."""
    if not TABLE.exists():
        raise FileNotFoundError(f"{TABLE} is missing: run `python scripts/sd15_cost.py table`")
    return json.loads(TABLE.read_text())


def call_cost(part: str, batch: int, side: int, grad: bool) -> dict[str, float]:
    """SD 1.5's cost of one call from the table: linear in the batch, and, at another latent
    side than 64, scaled by the number of latent cells (convolutions dominate; flash attention's
    memory is linear in the tokens too)."""
    row = table()["parts"][part]["grad" if grad else "no_grad"]
    area = 1.0 if part == "text_encoder" else (side / SD15_SIDE) ** 2
    return {k: max(0.0, (v["fixed"] + v["per_sample"] * batch) * area) for k, v in row.items()}


def weight_bytes(part: str) -> float:
    """SD 1.5's float16 weights of one part."""
    return table()["parts"][part]["weights"]


# --- the estimate -------------------------------------------------------------------------------
def sd15_side(part: str, side: int, native: int) -> int:
    """The latent side SD 1.5 would use where the notebook's model (latent side `native`) used
    `side`; 0 for the text encoder."""
    return 0 if part == "text_encoder" else max(1, round(SD15_SIDE * side / native))


def call_seconds_t4(part: str, batch: int, side: int, grad: bool) -> float:
    """A T4's time for one call: diffusers' measured U-Net throughput, scaled by FLOPs."""
    unet_sample = call_cost("unet", 1, SD15_SIDE, False)["flops"]
    seconds = call_cost(part, batch, side, grad)["flops"] / unet_sample * T4_PER_SAMPLE_S
    return max(seconds, T4_FLOOR_S) if part == "unet" else seconds


def _call_peak(part: str, batch: int, side: int, grad: bool) -> float:
    """A call's own peak. On a GPU `load_pipeline` slices the VAE (diffusers' `enable_slicing`):
    one image at a time, so its peak is one image's, plus the graphs of the images before it."""
    if part.startswith("vae.") and batch > 1:
        one = call_cost(part, 1, side, grad)
        return one["peak"] + (batch - 1) * one["kept"]
    return call_cost(part, batch, side, grad)["peak"]


def estimate(records: Iterable[dict]) -> dict[str, float]:
    """SD 1.5 at 512^2 in float16 on a T4, from a notebook's metered calls: the peak memory
    (GiB), the time (minutes) and the number of calls; `worst` is the call that needs most."""
    peak, seconds, n, worst = 0.0, 0.0, 0, None
    for r in records:
        n += 1
        side = sd15_side(r["part"], r["side"], r["native"])
        seconds += call_seconds_t4(r["part"], r["batch"], side, r["grad"])
        weights = sum(count * weight_bytes(p) for p, count in r["live"].items())
        graphs = sum(call_cost(p, b, sd15_side(p, s, r["native"]), True)["kept"]
                     for p, b, s in r["open"])  # fmt: skip
        need = weights + graphs + _call_peak(r["part"], r["batch"], side, r["grad"])
        if need > peak:
            peak, worst = need, {**r, "open": len(r["open"])}
    return {"peak_gib": peak / GiB, "t4_minutes": seconds / 60, "calls": n, "worst": worst}


# --- the report ---------------------------------------------------------------------------------
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _worst_call(w: dict | None) -> str:
    if w is None:
        return ""
    what = f"{w['part']} batch {w['batch']}" + (" with a graph" if w["grad"] else "")
    return what + (f", {w['open']} graphs open" if w["open"] else "")


def header_figures(notebook: str) -> tuple[float, float] | None:
    """(GiB, minutes) that the notebook's first cell states for SD 1.5, if it states them."""
    import re

    path = NOTEBOOKS / f"{notebook}.ipynb"
    if not path.exists():
        return None
    first = json.loads(path.read_text())["cells"][0]["source"]
    found = re.search(r"peak ([\d.]+) GiB, ([\d.]+) min", "".join(first))
    return (float(found[1]), float(found[2])) if found else None


def report(folder: str | os.PathLike) -> list[str]:
    """The README's table, one row per `<notebook>.jsonl` in `folder`: | nb | calls | peak GiB |
    T4 min | the call that needs most |, marked where over the budgets, and where a notebook's
    header states other figures, a note to update it."""
    lines = [
        "| notebook | metered calls | SD 1.5 peak memory | T4 time | the call that needs most |",
        "|---|---|---|---|---|",
    ]
    for path in sorted(Path(folder).glob("*.jsonl")):
        r = estimate(read(path))
        over = r["peak_gib"] > BUDGET_GIB or r["t4_minutes"] > BUDGET_MINUTES
        stated = header_figures(path.stem)
        stale = stated is not None and (
            abs(stated[0] - r["peak_gib"]) > 0.15 or abs(stated[1] - r["t4_minutes"]) > 0.15
        )
        lines.append(
            f"| {path.stem[:2]} | {r['calls']:,} | {r['peak_gib']:.1f} GiB | "
            f"{r['t4_minutes']:.1f} min | {_worst_call(r['worst'])}{' (over budget)' if over else ''}"
            f"{f' (its header says {stated[0]} GiB, {stated[1]} min: update it)' if stale else ''} |"
        )
    return lines


def over_memory(folder: str | os.PathLike) -> list[str]:
    """The notebooks in `folder` whose SD 1.5 peak exceeds BUDGET_GIB, one line each saying by
    how much and at which call: `make test` fails on any (conftest.py). The T4 time is reported
    by `report`, not asserted: four notebooks are still over BUDGET_MINUTES (issue 28)."""
    lines = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        r = estimate(read(path))
        if r["peak_gib"] > BUDGET_GIB:
            lines.append(
                f"{path.stem}: SD 1.5 would need {r['peak_gib']:.1f} GiB, over the {BUDGET_GIB:g} GiB "
                f"of a 16 GB T4, at {_worst_call(r['worst'])} (cell In[{r['worst'].get('cell')}]): "
                "chunk the batch (course_utils.gym.GRAD_CHUNK, finetune.GRAPH_ROWS) or free a model"
            )
    return lines
