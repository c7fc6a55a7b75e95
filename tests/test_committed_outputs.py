"""The committed notebooks are what a reader on the web sees: every code cell executed, and no
noise in the outputs — no stderr, no warnings, no paths of the machine that executed them, no
echoed return values (a bare `0.0` or `False` under a check)."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
ECHOED = re.compile(
    r"^(True|False|None|-?[0-9.]+(e-?[0-9]+)?|\[?Text\(.*|\[?<matplotlib.*|<Figure size.*)$", re.S
)
MACHINE_PATHS = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Z]:\\\\)")


def text_of(output: dict) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_are_clean(path):
    cells = json.loads(path.read_text())["cells"]
    problems = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i}: never executed (run `make execute`)")
        for out in cell.get("outputs", []):
            text = text_of(out)
            if out["output_type"] == "error":
                problems.append(f"cell {i}: an error ({out['ename']})")
            if out.get("name") == "stderr":
                problems.append(f"cell {i}: stderr {text[:80]!r}")
            if "Warning" in text:
                problems.append(f"cell {i}: a warning {text[:80]!r}")
            if MACHINE_PATHS.search(text):
                problems.append(f"cell {i}: a machine path {MACHINE_PATHS.search(text)[0]!r}")
            if out["output_type"] == "execute_result" and ECHOED.match(text.strip()):
                problems.append(f"cell {i}: an echoed return value {text.strip()!r} (end with ';')")
    assert path.stat().st_size < 3_000_000, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
