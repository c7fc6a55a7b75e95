"""SD 1.5's cost of each notebook, from the calls `make test` records (course_utils.meter).

    python scripts/sd15_cost.py table            # re-measure course_utils/sd15_cost.json (~5 min)
    python scripts/sd15_cost.py report FOLDER    # one row per notebook from FOLDER/<nb>.jsonl

`make test` sets COURSE_METER to a temporary folder for run 1 and prints `meter.report` at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils import meter  # noqa: E402


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
    print("\n".join(meter.report(args.folder)))


if __name__ == "__main__":
    main()
