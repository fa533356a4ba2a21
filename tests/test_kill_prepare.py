"""SIGKILL `generate` and `convert` (their whole process group: workers too) at seeded random
moments while they write (after their hidden work folder appears), then check that nothing a
later step reads is half-written or doubled, and that a rerun cleans up what the killed run left
and delivers every event exactly once. Killing `generate` alone (not its workers) is tested too.

After each kill, every visible Parquet file under `--out` must be complete (it reads, with all its
events); leftovers may only be hidden (temporaries, staging and parts folders). After the rerun,
no hidden leftovers remain and the outputs hold exactly the expected events.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from engine.data.canonical import parquet_io
from engine.data.conversion import convert as cv
from engine.data.shards import read_inputs
from engine.errors import InputError
from tests import rootfiles as rf

REPO = Path(__file__).resolve().parents[1]
GENERATE_EVENTS = 20
CONVERT_INPUTS = 3
CONVERT_EVENTS = 3000


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _run(args: list[str]) -> None:
    proc = _start(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def _kill_while_writing(args: list[str], out: Path, seconds: float, started=None,
                        before=lambda: None) -> bool:
    """`_kill_once`, with half the wait each time the run ends before it (a fast machine); `before`
    runs before each attempt."""
    for _ in range(5):
        before()
        if _kill_once(args, out, seconds, started):
            return True
        seconds /= 2
    return False


def _kill_once(args: list[str], out: Path, seconds: float, started=None) -> bool:
    """Start; once `started(out)` (default: a hidden entry appears in `out`: the run is writing),
    wait `seconds` more and SIGKILL the process group. True if it was still running when killed."""
    started = started or _hidden
    proc = _start(args)
    try:
        while proc.poll() is None and not started(out):
            time.sleep(0.01)
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    finally:
        proc.stderr.close()


def _kill_parent_only(args: list[str], out: Path, started=None) -> None:
    """SIGKILL only the command, not its workers: the workers notice and exit on their own."""
    started = started or _hidden
    proc = _start(args)
    while proc.poll() is None and not started(out):
        time.sleep(0.01)
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    proc.stderr.close()
    deadline = time.monotonic() + 60
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "workers outlived the killed command"
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _visible(out: Path) -> list[Path]:
    try:
        return parquet_io.list_parquet(out)
    except InputError:
        return []


def _hidden(out: Path) -> list[str]:
    """Hidden entries in `out` or one level down (a dataset folder's temporaries)."""
    if not out.is_dir():
        return []
    return sorted(str(p.relative_to(out)) for p in [*out.glob(".*"), *out.glob("*/.*")])


@pytest.mark.slow
def test_killed_generate_leaves_nothing_a_reader_sees(tmp_path):
    """Killed runs (each from an empty folder, so that the kill falls inside the work) leave complete
    parts or hidden temporaries, never a dataset a reader takes; after a last kill of the command
    alone, the rerun keeps the parts that were complete (untouched) and delivers every event once."""
    out = tmp_path / "gen"
    args = ["generate", "--process", "ttbar", "--events", GENERATE_EVENTS, "--task-events", 5,
            "--out", out, "--seed", 3, "--no-progress"]
    killed = left = 0
    for i, delay in enumerate(np.random.default_rng(5).uniform(0.0, 3.0, 3)):
        killed += _kill_while_writing(args + ["--workers", 2 - i % 2], out, delay, _planned,
                                      before=lambda: shutil.rmtree(out, ignore_errors=True))
        left += bool(_hidden(out)) or not _visible(out)
        for path in _visible(out):
            assert parquet_io.read(path).num_rows == 5
    assert killed == 3 and left >= 1, "the runs ended before the kills: nothing was tested"
    _kill_parent_only(args + ["--workers", 2], out, _planned)
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "ttbar").glob("part-*.parquet")}
    _run(args + ["--workers", 2])
    assert _hidden(out) == []
    assert _visible(out) == [out / "ttbar" / f"part-{i:06d}.parquet" for i in range(4)]
    assert all((out / "ttbar" / name).stat().st_mtime_ns == ns for name, ns in kept.items())
    table = read_inputs([out]).table  # what `shard` reads
    assert table.num_rows == GENERATE_EVENTS
    ids = pc.binary_join_element_wise(*(table.column(c).cast("string") for c in ("run", "lumi", "event")),
                                      ":")
    assert len(pc.unique(ids)) == GENERATE_EVENTS


def _planned(out: Path) -> bool:
    return (out / "ttbar" / "_dataset.json").is_file()


@pytest.fixture(scope="module")
def convert_inputs(tmp_path_factory) -> tuple[list[Path], dict[str, int]]:
    """Three NanoAOD files and the events each converts to (from an in-process conversion)."""
    d = tmp_path_factory.mktemp("kill_inputs")
    inputs = [rf.write_root(d / f"in{i}.root", "Events", [rf.nanoaod_branches(CONVERT_EVENTS, seed=i)])
              for i in range(CONVERT_INPUTS)]
    jobs = cv.plan_jobs(inputs, d / "reference", "ttbar")
    done = cv.convert_all(jobs, d / "reference").converted
    return inputs, {r.out.name: r.events_accepted for r in done}


@pytest.mark.slow
def test_killed_convert_leaves_nothing_a_reader_sees(tmp_path, convert_inputs):
    inputs, expected = convert_inputs
    out = tmp_path / "conv"
    args = ["convert", *inputs, "--out", out, "--label", "ttbar", "--step-size", 500]
    killed = left = 0
    for i, delay in enumerate(np.random.default_rng(6).uniform(0.0, 1.5, 5)):
        killed += _kill_while_writing(args + ["--workers", 1 + i % 2], out, delay,
                                      before=lambda: _forget_outputs(out))
        left += bool(_hidden(out))
        _check_complete_or_absent(out, expected)
    assert killed == 5 and left >= 1, "the runs ended before the kills: nothing was tested"
    _run(args + ["--workers", 2])
    assert _hidden(out) == []
    assert {p.name: parquet_io.read(p).num_rows for p in _visible(out)} == expected
    record = json.loads((out / cv.RECORD_NAME).read_text())
    assert {r["output"]: r["events_accepted"] for r in record["converted"]} == expected
    assert record["failed"] == []


def _forget_outputs(out: Path) -> None:
    """Remove the complete outputs (a rerun would skip them), so that every run has all to convert."""
    for path in [*_visible(out), out / cv.RECORD_NAME]:
        path.unlink(missing_ok=True)


def _check_complete_or_absent(out: Path, expected: dict[str, int]) -> None:
    """Each visible output is complete; the record, if present, lists outputs that all exist."""
    for path in _visible(out):
        assert parquet_io.read(path).num_rows == expected[path.name]
    record = out / cv.RECORD_NAME
    if record.exists():
        names = {r["output"] for r in json.loads(record.read_text())["converted"]}
        assert names == set(expected) and all((out / n).is_file() for n in names)
