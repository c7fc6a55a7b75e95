"""Render notebooks to reveal.js slide decks that work with no network (`make slides`).

nbconvert's slides point at CDNs (reveal.js, require.js, jQuery, MathJax, mermaid). Lecture
rooms often have no internet, so we fetch those libraries once from the npm registry at build
time (`npm pack`, cached in build/vendor-cache), copy them next to the decks, and point every URL
at the local copy. The result, build/slides/, opens from disk or any static server.

    python scripts/make_slides.py notebooks/*.ipynb --out build/slides
"""

from __future__ import annotations

import argparse
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


def notebook_title(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0]
            return first.lstrip("# ").strip()
    return nb_path.stem


def render(nb_path: Path, out: Path) -> Path:
    import nbformat
    from nbconvert import SlidesExporter

    # the "white" theme loads its fonts locally ("simple", nbconvert's default, imports Google Fonts)
    exporter = SlidesExporter(**URLS, reveal_scroll=True, reveal_theme="white")
    nb = nbformat.read(nb_path, as_version=4)
    nb.metadata.pop("widgets", None)  # live widgets need a kernel (and a CDN); slides show outputs
    body, _ = exporter.from_notebook_node(nb)
    remote = REMOTE.findall(body)
    if remote:
        raise RuntimeError(f"{nb_path.name}: the deck still references remote URLs: {remote[:3]}")
    target = out / f"{nb_path.stem}.slides.html"
    target.write_text(body)
    return target


def write_index(decks: list[tuple[Path, str]], out: Path) -> Path:
    items = "\n".join(f'<li><a href="{d.name}">{html.escape(t)}</a></li>' for d, t in decks)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Stable Diffusion from the inside: slides</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.6}}</style></head>
<body><h1>Stable Diffusion from the inside</h1><p>One deck per notebook. Arrow keys move,
<kbd>s</kbd> opens the speaker notes. Works offline.</p><ol>
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
    decks = [(render(nb, args.out), notebook_title(nb)) for nb in sorted(args.notebooks)]
    index = write_index(decks, args.out)
    print(f"{len(decks)} decks and {index} written; no remote URLs.")


if __name__ == "__main__":
    main()
