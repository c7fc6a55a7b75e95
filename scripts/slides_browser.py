"""Open the decks of build/slides/ in a real, headless Chromium (Debian's `chromium`, driven by
playwright; nothing downloads a browser): measure every slide, and print every deck to PDF.

    python scripts/slides_browser.py check build/slides   # every slide fits 1280x720?
    python scripts/slides_browser.py pdf build/slides     # build/slides/pdf/<deck>.pdf, offline
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

WIDTH, HEIGHT = 1280, 720

MEASURE_JS = """
async () => {
  const leaves = Array.from(document.querySelectorAll(".reveal .slides section"))
    .filter(s => !s.querySelector("section"));
  const cfg = Reveal.getConfig(), rows = [];
  // wait for MathJax's queue only (the deck fits a slide there when it is shown); no paint:
  // reading scrollHeight lays the page out synchronously. Two animation frames a read cost
  // 40 -> 19 s for the 12 decks and changed none of the 379 slides' figures (measured).
  const settle = () => new Promise(done => {
    const q = window.MathJax && MathJax.Hub ? f => MathJax.Hub.Queue(f) : f => f();
    q(done);
  });
  for (const section of leaves) {
    const idx = Reveal.getIndices(section);
    Reveal.slide(idx.h, idx.v);
    await settle();
    const inner = section.querySelector(":scope > .fit-box") || section;
    const zoom = parseFloat(inner.style.zoom || "1");
    inner.style.zoom = "";                  // as it would be without the fitting script
    const before = Math.max(section.scrollHeight - cfg.height, section.scrollWidth - cfg.width, 0);
    inner.style.zoom = zoom;
    await settle();
    const rect = inner.getBoundingClientRect(), slides = document.querySelector(".reveal .slides");
    const scale = slides.getBoundingClientRect().width / cfg.width;  // reveal's own scaling
    const after = Math.round(Math.max(section.scrollHeight - cfg.height, section.scrollWidth - cfg.width,
                                      rect.height / scale - cfg.height, rect.width / scale - cfg.width - 1, 0));
    rows.push({h: idx.h, v: idx.v, before, after, scale: parseFloat(section.dataset.fitScale || "1"),
               title: (section.querySelector("h1,h2,h3") || {}).textContent || ""});
  }
  return rows;
}
"""


SHOW_JS = """
async ([h, v]) => {  // go to a slide at once (no transition) and wait until it is painted
  Reveal.configure({transition: "none", backgroundTransition: "none"});
  Reveal.slide(h, v);
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
}
"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise FileNotFoundError(
            "Debian's chromium is not installed: `apt-get install chromium` (CI's .ci/run does it)"
        )
    return path


def decks(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.slides.html"))
    if not found:
        raise FileNotFoundError(f"no decks in {folder}: run `make slides` first")
    return found


def open_deck(page, deck: Path, query: str = "") -> None:
    page.goto(deck.resolve().as_uri() + query)
    page.wait_for_function("window.slidesFitted === true", timeout=60_000)


def check(folder: Path, shots: Path | None = None) -> dict[str, list[dict]]:
    """Every leaf slide of every deck: overflow in px before and after fitting, and the scale."""
    from playwright.sync_api import sync_playwright

    report = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium())
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        for deck in decks(folder):
            open_deck(page, deck)
            rows = page.evaluate(MEASURE_JS)
            report[deck.name] = rows
            if shots is not None:  # a look at the slide the fitting had to shrink most
                worst = min(rows, key=lambda r: r["scale"])
                page.evaluate(SHOW_JS, [worst["h"], worst["v"]])
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / f"{deck.name.split('.')[0]}-smallest.png"))
        browser.close()
    return report


def pdf(folder: Path) -> list[Path]:
    """reveal.js's print mode (?print-pdf): one page per slide, 1280x720, backgrounds on."""
    from playwright.sync_api import sync_playwright

    out, written = folder / "pdf", []
    out.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium())
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        for deck in decks(folder):
            open_deck(page, deck, "?print-pdf")
            target = out / deck.name.replace(".slides.html", ".pdf")
            page.pdf(path=str(target), width=f"{WIDTH}px", height=f"{HEIGHT}px",
                     print_background=True)  # fmt: skip
            written.append(target)
        browser.close()
    return written


def pdf_pages(path: Path) -> int:
    """Pages of a PDF, counted from its page objects (no PDF library needed)."""
    import re

    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["check", "pdf"])
    ap.add_argument("folder", type=Path, nargs="?", default=Path("build/slides"))
    args = ap.parse_args(argv)
    if args.command == "pdf":
        for path in pdf(args.folder):
            print(f"{path}: {pdf_pages(path)} pages")
        return
    report = check(args.folder, shots=Path("build/slide-shots"))
    for deck, rows in report.items():
        print(f"{deck:42} {len(rows):3} slides  overflow before {max(r['before'] for r in rows):4} px"
              f"  after {max(r['after'] for r in rows):3} px  smallest font x{min(r['scale'] for r in rows):.2f}")  # fmt: skip
    (args.folder / "fit.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
