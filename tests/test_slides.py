"""`make slides`: decks render offline — every asset is local, and the structure follows the
cells' slide metadata. Uses a stand-in vendor folder, so no npm is needed here."""

import importlib.util
import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_slides", ROOT / "scripts" / "make_slides.py")
make_slides = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_slides)

ASSETS = [
    "reveal.js/dist/reveal.js",
    "reveal.js/dist/reveal.css",
    "reveal.js/dist/theme/white.css",
    "reveal.js/plugin/notes/notes.js",
    "requirejs/require.js",
    "jquery/dist/jquery.min.js",
    "mathjax/MathJax.js",
    "no-mermaid.mjs",
]


def fake_vendor(tmp_path: Path) -> Path:
    vendor = tmp_path / "vendor"
    for a in ASSETS:
        (vendor / a).parent.mkdir(parents=True, exist_ok=True)
        (vendor / a).write_text("/* stand-in */")
    return vendor


def small_notebook(path: Path) -> Path:
    cells = [
        new_markdown_cell("# A title\nintro"),
        new_markdown_cell("## Second slide\n$x^2$"),
        new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1\n")]),
        new_markdown_cell("### A sub-slide"),
        new_code_cell("import os"),
    ]
    kinds = ["slide", "slide", "-", "subslide", "skip"]
    for c, k in zip(cells, kinds):
        c.metadata["slideshow"] = {"slide_type": k}
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_deck_is_offline_and_structured(tmp_path):
    nb = small_notebook(tmp_path / "99_demo.ipynb")
    out = tmp_path / "slides"
    make_slides.main([str(nb), "--out", str(out), "--vendor", str(fake_vendor(tmp_path))])
    deck = (out / "99_demo.slides.html").read_text()
    assert not make_slides.REMOTE.search(deck)
    assert "Second slide" in deck and "import os" not in deck  # the skipped cell is not shown
    assert deck.count("<section") >= 3  # title slide, second slide, its sub-slide
    for ref in re.findall(r'(?:src|href)="(vendor/[^"?]+)', deck):
        assert (out / ref).is_file(), ref
    index = (out / "index.html").read_text()
    assert 'href="99_demo.slides.html"' in index and "A title" in index


def test_every_course_notebook_has_slide_metadata():
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells]
        assert None not in kinds, nb_path.name
        assert kinds[0] == "slide", nb_path.name
