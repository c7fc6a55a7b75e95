"""pyproject.toml and environment.yml pin the same versions; the repo's layout is the brief's."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    pins = dict(r.split("==") for r in reqs)
    assert len(pins) == len(reqs), "every dependency is pinned with =="
    return pins


def environment_pins() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    return dict(re.findall(r"^\s+- ([A-Za-z0-9_.\-]+)==(\S+)$", "\n".join(lines), re.M))


def test_environment_yml_pins_equal_pyproject():
    assert environment_pins() == pyproject_pins()


def test_installed_packages_are_the_pinned_ones():
    from importlib.metadata import version

    for name, pin in pyproject_pins().items():
        assert version(name).split("+")[0] == pin, name  # "2.13.0+cpu" is torch 2.13.0


def test_no_torchvision():
    assert "torchvision" not in pyproject_pins()  # breaks transformers' vision imports here


def test_top_level_layout():
    for name in ("notebooks", "course_utils", "tests", "environment.yml", "README.md", "Makefile"):
        assert (ROOT / name).exists(), name


def test_readme_notebook_map_matches_notebooks():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"`{nb.stem}`" in readme, f"{nb.name} is missing from the README's notebook map"


def test_no_pickled_weights_anywhere():
    tracked = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    assert not [p for p in tracked if p.suffix in (".bin", ".ckpt", ".pt", ".pth", ".pkl")]
