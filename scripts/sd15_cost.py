"""SD 1.5's cost of each notebook, from the calls `make test` records (course_utils.meter).

    python scripts/sd15_cost.py table            # re-measure course_utils/sd15_cost.json (~5 min)
    python scripts/sd15_cost.py report FOLDER    # one row per notebook from FOLDER/<nb>.jsonl

`make test` sets COURSE_METER to a temporary folder for run 1 and prints the report at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils import meter  # noqa: E402

BUDGET_GIB, BUDGET_MINUTES = 14.0, 10.0  # issue 28: a 16 GB T4, ten minutes


def rows(folder: Path) -> list[dict]:
    """One estimate per notebook recorded in `folder`, in the notebooks' order."""
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        est = meter.estimate(meter.read(path))
        out.append({"notebook": path.stem, **est})
    return out


def worst_call(w: dict | None) -> str:
    if w is None:
        return ""
    what = f"{w['part']} batch {w['batch']}" + (" with a graph" if w["grad"] else "")
    return what + (f", {w['open']} graphs open" if w["open"] else "")


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def header_figures(notebook: str) -> tuple[float, float] | None:
    """(GiB, minutes) that the notebook's first cell states for SD 1.5, if it states them."""
    import re

    path = NOTEBOOKS / f"{notebook}.ipynb"
    if not path.exists():
        return None
    first = json.loads(path.read_text())["cells"][0]["source"]
    found = re.search(r"peak ([\d.]+) GiB, ([\d.]+) min", "".join(first))
    return (float(found[1]), float(found[2])) if found else None


def report(folder: Path) -> list[str]:
    """The README's table: | nb | calls | peak GiB | T4 min | the call that needs most |, and
    where a notebook's header states other figures, a note to update it."""
    lines = [
        "| notebook | metered calls | SD 1.5 peak memory | T4 time | the call that needs most |",
        "|---|---|---|---|---|",
    ]
    for r in rows(folder):
        over = r["peak_gib"] > BUDGET_GIB or r["t4_minutes"] > BUDGET_MINUTES
        stated = header_figures(r["notebook"])
        stale = stated is not None and (
            abs(stated[0] - r["peak_gib"]) > 0.15 or abs(stated[1] - r["t4_minutes"]) > 0.15
        )
        lines.append(
            f"| {r['notebook'][:2]} | {r['calls']:,} | {r['peak_gib']:.1f} GiB | "
            f"{r['t4_minutes']:.1f} min | {worst_call(r['worst'])}{' (over budget)' if over else ''}"
            f"{f' (its header says {stated[0]} GiB, {stated[1]} min: update it)' if stale else ''} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["table", "report"])
    ap.add_argument("folder", type=Path, nargs="?")
    args = ap.parse_args(argv)
    if args.command == "table":
        meter.TABLE.write_text(json.dumps(meter.build_table(), indent=1) + "\n")
        print(f"wrote {meter.TABLE}")
        return
    if args.folder is None or not args.folder.is_dir():
        ap.error("report needs the folder COURSE_METER pointed to")
    print("\n".join(report(args.folder)))


if __name__ == "__main__":
    main()
