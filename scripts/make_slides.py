"""Render notebooks to reveal.js slide decks that work with no network (`make slides`).

nbconvert's slides point at CDNs (reveal.js, require.js, jQuery, MathJax, mermaid). Lecture
rooms often have no internet, so we fetch those libraries once from the npm registry at build
time (`npm pack`, cached in build/vendor-cache), copy them next to the decks, and point every URL
at the local copy. The result, build/slides/, opens from disk or any static server.

Projector-ready (16:9, 1280x720): the decks are laid out at 1280x720; a slide whose cells would
not fit (estimated from their lines and figure heights) continues on a new sub-slide *before* the
cell that would overflow, so a long section becomes several slides instead of a scrolling one;
code wraps instead of running off the right edge; and a last script zooms out any slide
that still overflows (fitting text was preferred to cutting it off or to scroll bars, which a
projected talk cannot use). tests/test_slides_browser.py checks every slide in Chromium.

    python scripts/make_slides.py notebooks/*.ipynb --out build/slides
"""

from __future__ import annotations

import argparse
import base64
import copy
import html
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

VENDOR = {  # npm package -> folder name under vendor/
    "reveal.js@4.0.2": "reveal.js",
    "requirejs@2.3.6": "requirejs",
    "jquery@3.5.1": "jquery",
    "mathjax@2.7.9": "mathjax",
}
SKIP_IN_MATHJAX = (
    "package/unpacked/",
    "package/fonts/HTML-CSS/TeX/png/",
    "package/fonts/HTML-CSS/STIX-Web/",
    "package/fonts/HTML-CSS/Asana-Math/",
    "package/fonts/HTML-CSS/Gyre-",
    "package/fonts/HTML-CSS/Latin-Modern/",
    "package/fonts/HTML-CSS/Neo-Euler/",
)
URLS = dict(
    reveal_url_prefix="vendor/reveal.js",
    require_js_url="vendor/requirejs/require.js",
    jquery_url="vendor/jquery/dist/jquery.min.js",
    mathjax_url="vendor/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    mermaid_js_url="vendor/no-mermaid.mjs",
    font_awesome_url="",
)
# what a browser would fetch: script/img src, <link href>, CSS url(...)/@import, JS module imports
REMOTE = re.compile(
    r"""(?:<(?:script|img|iframe)[^>]*\ssrc|<link[^>]*\shref)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import\s+["'](?:https?:)?//|\bfrom\s+["'](?:https?:)?//""",
    re.I,
)


def fetch_vendor(cache: Path) -> Path:
    """Download (once) and unpack the JavaScript libraries; returns the vendor folder."""
    vendor = cache / "vendor"
    if (vendor / ".complete").exists():
        return vendor
    cache.mkdir(parents=True, exist_ok=True)
    for spec, name in VENDOR.items():
        tgz = next(cache.glob(spec.split("@")[0].replace("/", "-") + "-*.tgz"), None)
        if tgz is None:
            subprocess.run(
                ["npm", "pack", spec, "--silent"], cwd=cache, check=True, capture_output=True
            )
            tgz = next(cache.glob(spec.split("@")[0] + "-*.tgz"))
        with tarfile.open(tgz) as tar:
            members = [
                m for m in tar.getmembers() if m.isfile() and not m.name.startswith(SKIP_IN_MATHJAX)
            ]
            for m in members:
                m.name = m.name.removeprefix("package/")
            tar.extractall(vendor / name, members=members, filter="data")
    (vendor / "no-mermaid.mjs").write_text("export default { initialize() {} };\n")
    (vendor / ".complete").touch()
    return vendor


WIDTH, HEIGHT = 1280, 720  # a 16:9 projector
BUDGET = 600  # px of a slide's height the cells may fill (the rest: margins, slide number)
LINE = {"markdown": 34, "code": 26, "output": 25}  # px per line at the deck's fonts
CHARS = {"markdown": 95, "code": 100, "output": 110}  # characters per line before wrapping
FIT_CSS = """
<style>
.reveal .jp-InputPrompt, .reveal .jp-OutputPrompt { display: none; }  /* In [3]: -- no room */
.reveal pre, .reveal code { white-space: pre-wrap; word-break: break-word; }
:root { --jp-code-font-size: 17px; --jp-content-font-size1: 20px; }
.reveal .jp-OutputArea-output img { max-height: 560px; width: auto; }
.reveal section { height: auto; }
@media print {  /* no blank page after the last slide */
  .reveal .slides .pdf-page:last-child { page-break-after: avoid !important; break-after: avoid !important; }
}
</style>
"""
FIT_JS = """
<script>
// Zoom out any slide whose content is taller or wider than the 1280x720 slide.
require(["%(reveal)s/dist/reveal.js"], function (Reveal) {
  window.Reveal = Reveal;  // for the speaker and for tests/test_slides_browser.py
  function leaves() {
    return Array.from(document.querySelectorAll(".reveal .slides section"))
      .filter(function (s) { return !s.querySelector("section"); });
  }
  function box(section) {  // the slide's content in one block, zoomed as a whole
    var inner = section.querySelector(":scope > .fit-box");
    if (!inner) {
      inner = document.createElement("div");
      inner.className = "fit-box";
      while (section.firstChild) { inner.appendChild(section.firstChild); }
      section.appendChild(inner);
    }
    return inner;
  }
  function fit(section) {  // CSS zoom: the content laid out smaller, wrapping wider
    var cfg = Reveal.getConfig(), inner = box(section), zoom = 1;
    inner.style.zoom = "";
    for (var i = 0; i < 8; i++) {
      var tall = section.scrollHeight, wide = section.scrollWidth;  // zoomed content + padding
      if (tall <= cfg.height && wide <= cfg.width + 1) break;
      zoom *= Math.min(0.98, cfg.height / tall, (cfg.width + 1) / wide);
      inner.style.zoom = zoom;
    }
    section.dataset.fitScale = zoom.toFixed(2);
    Reveal.layout();
  }
  function fitAll() { leaves().forEach(fit); window.slidesFitted = true; }
  function fitCurrent() {  // hidden slides measure 0: fit each one when it is shown
    var queue = window.MathJax && MathJax.Hub ? function (f) { MathJax.Hub.Queue(f); } : function (f) { f(); };
    queue(function () { fit(Reveal.getCurrentSlide()); window.slideFitted = Reveal.getCurrentSlide(); });
  }
  function whenReady() {
    if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(fitAll); } else { fitAll(); }
    fitCurrent();
    Reveal.on("slidechanged", fitCurrent);
  }
  if (Reveal.isReady()) { whenReady(); } else { Reveal.on("ready", whenReady); }
});
</script>
"""


def png_height(data: str) -> int:
    """Pixel height of a base64 PNG, read from its IHDR chunk (bytes 20-24)."""
    raw = base64.b64decode(data[:64])
    return int.from_bytes(raw[20:24], "big")


def cell_height(cell: dict) -> int:
    """Estimated pixels a cell takes on a slide: wrapped lines times a line height, figures at
    their own height (capped as the CSS caps them)."""

    def lines(text: str, kind: str) -> int:
        return sum(max(1, -(-len(line) // CHARS[kind])) for line in text.splitlines() or [""])

    src = "".join(cell.get("source", ""))
    if cell["cell_type"] == "markdown":
        return lines(src, "markdown") * LINE["markdown"] + 10 * src.count("$$")
    folded = "slide-figure-only" in cell.get("metadata", {}).get("tags", [])
    height = 0 if folded else lines(src, "code") * LINE["code"] + 16
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "image/png" in data:
            height += min(560, png_height(data["image/png"])) + 10
        elif out.get("output_type") == "stream":
            height += lines("".join(out.get("text", "")), "output") * LINE["output"]
        elif "text/plain" in data:
            height += lines("".join(data["text/plain"]), "output") * LINE["output"]
    return height


LONG_PLOT = 15  # lines: a longer cell that draws a figure shows only the figure on its slide


def fold_long_plots(nb: dict) -> int:
    """Tag the code of long cells that draw a figure to be left off the slide (the notebook keeps
    it): a class reads the picture, not 40 lines of matplotlib. Returns how many were folded."""
    folded = 0
    for cell in nb["cells"]:
        draws = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        if (
            cell["cell_type"] == "code"
            and draws
            and len("".join(cell["source"]).splitlines()) > LONG_PLOT
        ):
            cell.setdefault("metadata", {}).setdefault("tags", []).append("slide-figure-only")
            folded += 1
    return folded


def split_long_slides(nb: dict) -> int:
    """Start a sub-slide before any cell that would push its slide past BUDGET pixels; returns
    how many were started. Cells skipped or sent to the notes do not count."""
    used, started = 0, 0
    for cell in nb["cells"]:
        kind = cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")
        if kind in ("skip", "notes"):
            continue
        h = cell_height(cell)
        if kind in ("slide", "subslide"):
            used = h
        elif used and used + h > BUDGET:
            cell.setdefault("metadata", {})["slideshow"] = {"slide_type": "subslide"}
            used, started = h, started + 1
        else:
            used += h
    return started


def notebook_title(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0]
            return first.lstrip("# ").strip()
    return nb_path.stem


def render(nb_path: Path, out: Path) -> tuple[Path, int]:
    import nbformat
    from nbconvert import SlidesExporter

    # the "white" theme loads its fonts locally ("simple", nbconvert's default, imports Google Fonts)
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.remove_input_tags = {"slide-figure-only"}
    config.TagRemovePreprocessor.enabled = True
    exporter = SlidesExporter(
        config=config,
        **URLS,
        reveal_scroll=False,
        reveal_theme="white",
        reveal_width=str(WIDTH),
        reveal_height=str(HEIGHT),
        reveal_number="c/t",
    )
    nb = nbformat.read(nb_path, as_version=4)
    nb.metadata.pop("widgets", None)  # live widgets need a kernel (and a CDN); slides show outputs
    nb = copy.deepcopy(nb)
    fold_long_plots(nb)
    split_long_slides(nb)
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace("</head>", FIT_CSS + "</head>", 1)
    # handouts: one PDF page per slide (its content is zoomed to fit, never continued)
    body = body.replace(
        "Reveal.initialize({", "Reveal.initialize({\n            pdfMaxPagesPerSlide: 1,", 1
    )
    body = body.replace("</body>", FIT_JS % {"reveal": URLS["reveal_url_prefix"]} + "</body>", 1)
    remote = REMOTE.findall(body)
    if remote:
        raise RuntimeError(f"{nb_path.name}: the deck still references remote URLs: {remote[:3]}")
    target = out / f"{nb_path.stem}.slides.html"
    target.write_text(body)
    return target, teaching_minutes(nb)


def teaching_minutes(nb: dict) -> int:
    """2 minutes per slide and sub-slide, 1 more per code cell shown (run or read live)."""
    kinds = [c.get("metadata", {}).get("slideshow", {}).get("slide_type", "-") for c in nb["cells"]]
    slides = sum(k in ("slide", "subslide") for k in kinds)
    code = sum(
        c["cell_type"] == "code" and k not in ("skip", "notes") for c, k in zip(nb["cells"], kinds)
    )
    return 2 * slides + code


def write_index(decks: list[tuple[Path, str, int]], out: Path) -> Path:
    items = "\n".join(
        f'<li><a href="{d.name}">{html.escape(t)}</a> <small>about {m} min</small></li>'
        for d, t, m in decks
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Stable Diffusion from the inside: slides</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.6}}</style></head>
<body><h1>Stable Diffusion from the inside</h1><p>One deck per notebook. Arrow keys move,
<kbd>s</kbd> opens the speaker view with the notes, <kbd>Esc</kbd> the overview. Works offline.
Teaching times are estimates: 2 minutes per slide plus 1 per code cell shown.</p><ol>
{items}
</ol></body></html>
"""
    (out / "index.html").write_text(page)
    return out / "index.html"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("build/slides"))
    ap.add_argument("--vendor", type=Path, help="an unpacked vendor folder to use instead of npm")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    vendor = args.vendor or fetch_vendor(Path("build/vendor-cache"))
    if (args.out / "vendor").resolve() != vendor.resolve():
        shutil.copytree(vendor, args.out / "vendor", dirs_exist_ok=True)
    decks = []
    for nb in sorted(args.notebooks):
        target, minutes = render(nb, args.out)
        decks.append((target, notebook_title(nb), minutes))
    index = write_index(decks, args.out)
    print(f"{len(decks)} decks and {index} written; no remote URLs.")


if __name__ == "__main__":
    main()
