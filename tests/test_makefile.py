"""`make lab` never overwrites a learner's working copy, and never turns off authentication."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_my_notebooks_copies_new_ones_and_keeps_edits(tmp_path):
    my = tmp_path / "mine"
    run = lambda: subprocess.run(
        ["make", "-s", "my-notebooks", f"MY={my}"], cwd=ROOT, check=True, capture_output=True
    )
    run()
    course = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in my.glob("*.ipynb")) == course
    edited = my / course[0]
    edited.write_text("my own work")
    (my / course[1]).unlink()
    run()
    assert edited.read_text() == "my own work"  # kept
    assert (my / course[1]).read_bytes() == (
        ROOT / "notebooks" / course[1]
    ).read_bytes()  # restored


def test_lab_keeps_token_auth_and_localhost():
    recipe = (ROOT / "Makefile").read_text()
    lab = recipe[recipe.index("\nlab:") : recipe.index("\nmy-notebooks:")]
    assert "--ServerApp.ip=127.0.0.1" in lab
    assert "token=''" not in lab and 'token=""' not in lab and "disable_check_xsrf" not in lab
