"""The decks in a real browser: headless Chromium (Debian's `chromium`, driven by playwright —
nothing downloads a browser) opens every deck at 1280x720, walks every slide through reveal.js's
API and asserts that no slide's content is taller or wider than the slide. The slide each deck
had to zoom out most is kept as a screenshot in build/slide-shots/ for a look. Also: the PDF
handouts have one page per slide."""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_slides, browser = load("make_slides"), load("slides_browser")

if shutil.which("chromium") is None:
    if os.environ.get("CI"):  # CI installs it (.ci/run): a missing browser there is a failure
        raise RuntimeError("CI must have Debian's chromium: .ci/run installs it")
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    make_slides.main([*map(str, NOTEBOOKS), "--out", str(out)])  # the real reveal.js, MathJax
    return out


@pytest.fixture(scope="module")
def report(decks):
    return browser.check(decks, shots=ROOT / "build" / "slide-shots")


def test_every_deck_is_measured(report):
    assert sorted(report) == sorted(f"{p.stem}.slides.html" for p in NOTEBOOKS)
    assert all(len(rows) >= 5 for rows in report.values())


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_slide_fits_1280x720(report, nb):
    rows = report[f"{nb.stem}.slides.html"]
    too_big = [(r["h"], r["v"], r["after"]) for r in rows if r["after"] > 0]
    assert not too_big, f"slides (h, v, px over) that do not fit: {too_big}"
    assert min(r["scale"] for r in rows) >= 0.5, "a slide zoomed below 50%: split the cell"


def test_pdf_handouts_have_one_page_per_slide(decks, report):
    written = browser.pdf(decks)
    assert len(written) == len(NOTEBOOKS)
    for path in written:
        slides = report[path.name.replace(".pdf", ".slides.html")]
        assert browser.pdf_pages(path) == len(slides), path.name
