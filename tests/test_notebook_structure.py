"""What a learner, a web reader and an instructor rely on in every notebook's structure:
set-up and solution cells are off the slides, solutions start collapsed, every exercise has a
hint, a check and a solution, and every live widget has a static figure beside it (a committed
notebook, a web viewer and a slide deck show no widget)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def cells_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def src(cell: dict) -> str:
    return "".join(cell["source"])


def slide_type(cell: dict) -> str:
    return cell["metadata"].get("slideshow", {}).get("slide_type", "-")


def has_image(cell: dict) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_set_up_and_solutions_are_skipped_on_slides(path):
    cells = cells_of(path)
    setup = next(c for c in cells if c["cell_type"] == "code")
    assert slide_type(setup) == "skip", "the first code cell (set-up) must be slide_type skip"
    for i, cell in enumerate(cells):
        if "solution" in cell["metadata"].get("tags", []):
            assert slide_type(cell) == "skip", f"cell {i}: a solution shown on the slides"
            assert cell["metadata"].get("jupyter", {}).get("source_hidden"), (
                f"cell {i}: a solution must start collapsed (jupyter.source_hidden)"
            )


DEEPENED = NOTEBOOKS  # every notebook ends with the full exercise structure


@pytest.mark.parametrize("path", DEEPENED, ids=[p.stem for p in DEEPENED])
def test_exercises_have_a_hint_a_check_an_implementation_and_a_solution(path):
    cells = cells_of(path)
    starts = [i for i, c in enumerate(cells) if src(c).startswith("## Exercise")]
    assert len(starts) == 1, "one '## Exercises' section per notebook"
    section = cells[starts[0] :]
    text = src(section[0])
    assert "*Hint:*" in text, "the exercises name a hint (the checks point to it)"
    assert "**Implement**" in text, "at least one exercise asks to implement something"
    starter = [
        c
        for c in section
        if c["cell_type"] == "code" and "solution" not in c["metadata"].get("tags", [])
    ]
    solution = [c for c in section if "solution" in c["metadata"].get("tags", [])]
    assert starter and "check_" in src(starter[0]), "a starter cell that calls a check function"
    assert solution and "check_" in src(solution[0]), "a solution cell that passes the check"
    outputs = "".join("".join(o.get("text", "")) for c in solution for o in c.get("outputs", []))
    assert "not yet" not in outputs and "correct!" in outputs, "the solution passes its checks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_widget_has_a_static_figure_beside_it(path):
    cells = cells_of(path)
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and "_panel(" in src(cell):
            near = [c for c in cells[max(0, i - 2) : i + 3] if c is not cell]
            assert any(has_image(c) for c in near), (
                f"cell {i}: a widget with no static figure within two cells of it"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_speaker_notes_are_in_the_deck_not_on_the_slides(path, tmp_path):
    import importlib.util

    cells = cells_of(path)
    notes = [c for c in cells if slide_type(c) == "notes"]
    assert notes, "speaker notes (a markdown cell with slide_type notes) for the instructor"
    spec = importlib.util.spec_from_file_location(
        "make_slides", path.parents[1] / "scripts" / "make_slides.py"
    )
    make_slides = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_slides)
    deck = make_slides.render(path, tmp_path)[0].read_text()
    first_line = src(notes[0]).splitlines()[1][2:30]
    assert (
        '<aside class="notes">' in deck and first_line in deck.split('<aside class="notes">', 1)[1]
    )
