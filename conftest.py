"""The plan of `make test` (pytest-xdist, two workers), for the unit tests in tests/ and the
notebooks that nbval collects in notebooks/: this file sits above both so that it sees both.
The fixtures live in tests/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

# two workers, one thread each (and so every notebook kernel they start): README, "Timings"
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def kernel_path_below_this_cpus() -> str:
    """The ATEN_CPU_CAPABILITY one below the best this CPU has: "avx2" on an AVX-512 machine,
    else torch's plain C kernels, "default" (the flags torch's AVX-512 path needs, from Linux's
    /proc/cpuinfo; anything unreadable counts as no AVX-512)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return "default"
    return "avx2" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags else "default"


# Other CPU kernels than this machine's best, so that a check that holds for one machine's
# rounding only fails here, on every commit (issue 28), with MKL's reproducible path:
# - the unit tests run one path below the best (set here, before torch is imported);
# - run 1's notebook kernels too where that costs nothing (AVX2 kernels on an AVX-512 CPU); on an
#   AVX2-only CPU the next path down is the plain C one, which costs run 1 20-40 %, so the
#   kernels keep AVX2 there (a fresh clone passes with ATEN_CPU_CAPABILITY=default too).
# ATEN_CPU_CAPABILITY set by you wins for both: `ATEN_CPU_CAPABILITY=default make test`.
_BELOW = kernel_path_below_this_cpus()
os.environ.setdefault("COURSE_KERNELS_PATH", os.environ.get("ATEN_CPU_CAPABILITY", "")
                      or ("avx2" if _BELOW == "avx2" else "native"))  # fmt: skip
os.environ.setdefault("ATEN_CPU_CAPABILITY", _BELOW)
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

# Run 1 records every call of the pipelines the notebooks load (course_utils.meter): the summary
# converts them to SD 1.5's memory and T4 time per notebook (issue 28). The workers inherit the
# folder; each notebook's kernel learns its name from COURSE_METER_NOTEBOOK (below).
_OUR_METER = "COURSE_METER" not in os.environ  # in the controller; the workers inherit it
if _OUR_METER:
    os.environ["COURSE_METER"] = tempfile.mkdtemp(prefix="course-meter-")
METER = os.environ["COURSE_METER"]

# --- the plan of `make test` on two workers --------------------------------------------------
# xdist hands the units out in the order of COST, longest first, so that neither worker idles
# at the end; a notebook's nbval cells form one unit (one kernel runs them, in order). The
# seconds are measured on the 2-core machine with one thread a worker (`make test`'s own
# phase table below, and `pytest --durations`); a unit not listed counts 1 s.
RUN1, RUN2, UNIT = "run 1: nbval", "run 2: sd15-small, fp16", "unit tests"
ONE_UNIT = ("tests/test_slides_browser.py",)  # test files that run on one worker, in order
COST: dict[tuple[str, str], float] = {
    (UNIT, "tests/test_slides_browser.py"): 200,
    (RUN1, "06_unet_cfg_reward"): 180,
    (RUN1, "09_samplers"): 170,
    (RUN1, "11_personalisation"): 160,
    (RUN1, "10_reward_finetuning"): 130,
    (RUN2, "09_samplers"): 90,
    (RUN1, "07_img2img_inpainting"): 85,
    (RUN2, "11_personalisation"): 63,
    (RUN2, "10_reward_finetuning"): 60,
    (RUN2, "06_unet_cfg_reward"): 57,
    (RUN1, "08_unet_inside"): 55,
    (RUN1, "05_scheduler_conversion"): 50,
    (RUN1, "01_tokenization"): 45,
    (RUN2, "07_img2img_inpainting"): 42,
    (RUN2, "05_scheduler_conversion"): 35,
    (RUN1, "04_ddpm_maths"): 30,
    (RUN2, "04_ddpm_maths"): 27,
    (RUN2, "08_unet_inside"): 24,
    (RUN2, "03_vae_roundtrip"): 23,
    (RUN2, "01_tokenization"): 23,
    (RUN1, "03_vae_roundtrip"): 17,
}


def unit_of(nodeid: str) -> tuple[str, str]:
    """(phase, unit) of a test id: a notebook's name for the three executions."""
    path, _, name = nodeid.partition("::")
    if path.endswith(".ipynb"):
        return RUN1, Path(path).stem
    if path.endswith("test_notebook_runs.py") and name.startswith("test_notebook_runs["):
        return RUN2, name.removeprefix("test_notebook_runs[").rstrip("]")[:-6]
    if path.endswith(ONE_UNIT):  # its module fixtures are costly: build them once, on one worker
        return UNIT, path
    return UNIT, nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: -COST.get(unit_of(item.nodeid), 1.0))  # stable: cells keep order


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown when pytest runs without -n
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with our units: a notebook's nbval cells go to one worker, in
    order, and so do the tests of a file in ONE_UNIT; every other test is a unit of its own. Units go out in collection order (the sort
    above: longest first), each to the first worker that is free."""
    from xdist.scheduler import LoadScopeScheduling

    class Plan(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            phase, unit = unit_of(nodeid)
            return f"{phase}: {unit}" if unit != nodeid else nodeid

    config.option.loadscopereorder = False
    return Plan(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before nbval starts a notebook's kernel (in its first cell's set-up), name the notebook
    for the meter and set its CPU kernels (above); unit tests and run 2 are not metered."""
    path = item.nodeid.partition("::")[0]
    if path.endswith(".ipynb"):
        os.environ["COURSE_METER_NOTEBOOK"] = Path(path).stem
        kernels = os.environ["COURSE_KERNELS_PATH"]  # read by torch in the kernel, not here
        if kernels == "native":
            os.environ.pop("ATEN_CPU_CAPABILITY", None)
        else:
            os.environ["ATEN_CPU_CAPABILITY"] = kernels
    else:
        os.environ.pop("COURSE_METER_NOTEBOOK", None)


_SECONDS: dict[str, float] = {}
_START = time.perf_counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    phase = unit_of(report.nodeid)[0]
    _SECONDS[phase] = _SECONDS.get(phase, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _SECONDS or hasattr(config, "workerinput"):
        return
    workers = getattr(config.option, "numprocesses", None) or 1
    terminalreporter.section("time per phase (seconds of work, summed over the workers)")
    for phase in (UNIT, RUN1, RUN2):
        if phase in _SECONDS:
            terminalreporter.write_line(f"{phase:<24} {_SECONDS[phase]:7.0f} s")
    wall = time.perf_counter() - _START
    terminalreporter.write_line(f"{'wall clock':<24} {wall:7.0f} s on {workers} worker(s)")
    if any(Path(METER).glob("*.jsonl")):
        from course_utils import meter

        terminalreporter.section("SD 1.5 at 512x512 in fp16 on a T4, estimated from run 1's calls")
        for line in meter.report(METER):
            terminalreporter.write_line(line)
        for line in _OVER_MEMORY:
            terminalreporter.write_line(f"FAILED (memory budget) {line}", red=True)


_OVER_MEMORY: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """make test fails when a notebook run 1 metered would not fit SD 1.5 on a 16 GB T4."""
    if hasattr(session.config, "workerinput") or not any(Path(METER).glob("*.jsonl")):
        return
    from course_utils import meter

    _OVER_MEMORY[:] = meter.over_memory(METER)
    if _OVER_MEMORY and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OUR_METER and not hasattr(config, "workerinput"):  # the folder this session made
        shutil.rmtree(METER, ignore_errors=True)
