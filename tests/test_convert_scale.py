"""`convert` on the executors: identical outputs on every executor, SIGKILL and resume, array-job
slices, outputs of other settings refused, bad inputs among good ones, damaged outputs redone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from engine.__main__ import main
from engine.data.canonical.parquet_io import write_table
from engine.data.canonical.schema import events_table
from engine.data.generation.synthetic import synthetic_events
from tests import rootfiles as rf

REPO = Path(__file__).resolve().parents[1]
EVENTS = 300


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("scale_inputs")
    return [rf.write_root(d / f"in{i}.root", "Events", [rf.nanoaod_branches(EVENTS, seed=40 + i)])
            for i in range(4)]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> dict[str, bytes]:
    """Every file of one plain run (outputs and record), by name."""
    out = tmp_path_factory.mktemp("scale_reference") / "out"
    assert convert(inputs, out) == 0
    return contents(out)


def convert(inputs: list[Path], out: Path, *options) -> int:
    return main(["convert", *map(str, inputs), "--out", str(out), "--label", "wjets", *map(str, options)])


def contents(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def outputs(out: Path) -> dict[str, bytes]:
    return {name: data for name, data in contents(out).items() if name.endswith(".parquet")}


def test_every_executor_writes_the_same_bytes(inputs, reference, tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("type: local\nworkers: 2\n")
    runs = {"local2": ["--workers", 2], "dask": ["--executor", "dask", "--cluster", cluster]}
    for name, options in runs.items():
        assert convert(inputs, tmp_path / name, *options) == 0, name
        assert contents(tmp_path / name) == reference, name
    printed = capsys.readouterr().out
    assert printed.count("converted 4 of 4 input(s), 0 skipped") == 2
    assert len(reference) == 5 and "convert.json" in reference


def test_rerun_skips_what_is_done(inputs, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert(inputs[:2], out) == 0
    capsys.readouterr()
    assert convert(inputs, out, "--workers", 2) == 0
    assert "converted 2 of 4 input(s), 2 skipped as already converted" in capsys.readouterr().out
    assert contents(out) == reference
    assert convert(inputs, out) == 0
    assert "converted 0 of 4 input(s), 4 skipped" in capsys.readouterr().out
    assert contents(out) == reference


# --- SIGKILL, then the same command again --------------------------------------------------

def _start(args: list) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "convert", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def slow_inputs(tmp_path_factory) -> tuple[list[Path], dict[str, bytes]]:
    """Six inputs that take long enough to convert in small steps that a kill lands between them,
    and the outputs of a clean run."""
    d = tmp_path_factory.mktemp("kill_inputs")
    inputs = [rf.write_root(d / f"k{i}.root", "Events", [rf.nanoaod_branches(2000, seed=60 + i)])
              for i in range(6)]
    assert convert(inputs, d / "clean", "--step-size", 100) == 0
    return inputs, outputs(d / "clean")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_after_the_first_output_then_rerun(slow_inputs, tmp_path, workers):
    inputs, clean = slow_inputs
    out = tmp_path / "out"
    args = [*inputs, "--out", out, "--label", "wjets", "--step-size", 100, "--workers", workers]
    proc = _start(args)
    while proc.poll() is None and not list(out.glob("*.parquet")):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    kept = outputs(out)
    assert 0 < len(kept) < len(inputs), "the run ended before the kill: nothing was tested"
    assert all(clean[name] == data for name, data in kept.items())   # complete, or absent
    assert not (out / "convert.json").exists()
    rerun = _start(args)
    printed, errors = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, errors
    assert f"converted {len(inputs) - len(kept)} of 6 input(s), {len(kept)} skipped as already converted" in printed
    assert outputs(out) == clean
    assert sorted(p.name for p in out.iterdir()) == sorted([*clean, "convert.json"])    # no temporaries left
    record = json.loads((out / "convert.json").read_text())
    assert [r["input"] for r in record["converted"]] == [str(p) for p in inputs]


def _pool_workers(pid: int) -> list[int]:
    """The process-pool workers the process `pid` spawned (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_a_lost_worker_costs_only_its_input(slow_inputs, tmp_path):
    """SIGKILL one pool worker while it converts: its input is retried, the run ends as a clean one."""
    inputs, clean = slow_inputs
    out = tmp_path / "out"
    proc = _start([*inputs, "--out", out, "--label", "wjets", "--step-size", 100, "--workers", 2])
    while proc.poll() is None and not list(out.glob(".*.tmp-*")):
        time.sleep(0.005)
    workers = _pool_workers(proc.pid)
    assert workers, "the run ended before a worker could be killed: nothing was tested"
    os.kill(workers[0], signal.SIGKILL)
    printed, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors
    assert "converted 6 of 6 input(s)" in printed
    assert outputs(out) == clean
    assert sorted(p.name for p in out.iterdir()) == sorted([*clean, "convert.json"])


# --- array-job slices ----------------------------------------------------------------------

@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_slices_together_equal_one_run(inputs, reference, tmp_path, capsys, order):
    out = tmp_path / "out"
    first, second = order
    assert convert(inputs, out, "--task-index", first, "--num-tasks", 2) == 0
    printed = capsys.readouterr().out
    assert "converted 2 of 2 input(s) (slice" in printed and "2 of 4 input(s) not converted yet" in printed
    assert sorted(outputs(out)) == [f"in{i}.parquet" for i in ((0, 1) if first == 0 else (2, 3))]
    assert not (out / "convert.json").exists()
    assert convert(inputs, out, "--task-index", second, "--num-tasks", 2) == 0
    assert f"wrote {out / 'convert.json'} (4 input(s))" in capsys.readouterr().out
    assert contents(out) == reference


def test_slices_of_mixed_formats(tmp_path, capsys):
    """The run of the last slice tells the other slice's formats from the files (`--format auto`)."""
    given = [rf.write_json(tmp_path / "study.json", rf.json_events(30, seed=3)),
             rf.write_root(tmp_path / "delphes.root", "Delphes", [rf.delphes_branches(30, seed=2)], naming="dotted")]
    for index in (0, 1):
        assert convert(given, tmp_path / "sliced", "--selection", "none", "--task-index", index,
                       "--num-tasks", 2) == 0
    assert convert(given, tmp_path / "whole", "--selection", "none") == 0
    assert contents(tmp_path / "sliced") == contents(tmp_path / "whole")
    record = json.loads((tmp_path / "whole" / "convert.json").read_text())
    assert [r["format"] for r in record["converted"]] == ["json", "delphes"]


def test_slices_at_the_same_time(inputs, reference, tmp_path):
    """Two array jobs into one folder at once: the same files as one run, the record included."""
    out = tmp_path / "out"
    procs = [_start([*inputs, "--out", out, "--label", "wjets", "--task-index", i, "--num-tasks", 2])
             for i in (0, 1)]
    for proc in procs:
        _, errors = proc.communicate(timeout=120)
        assert proc.returncode == 0, errors
    assert contents(out) == reference


def test_more_slices_than_inputs(inputs, reference, tmp_path):
    out = tmp_path / "out"
    for index in range(6):
        assert convert(inputs, out, "--task-index", index, "--num-tasks", 6) == 0
    assert contents(out) == reference


@pytest.mark.parametrize("options, words", [
    (["--task-index", 1], "--task-index/--num-tasks: give both or neither"),
    (["--task-index", 2, "--num-tasks", 2], "--task-index: must be in 0..1"),
    (["--workers", 0], "--workers: must be at least 1"),
    (["--executor", "dask"], "needs exactly one of --scheduler"),
])
def test_bad_executor_or_slice_options(inputs, tmp_path, capsys, options, words):
    assert convert(inputs, tmp_path / "out", *options) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]
    assert not (tmp_path / "out").exists()


# --- outputs written with other settings ---------------------------------------------------

def _with_other_cut(tmp_path: Path) -> list[str]:
    path = tmp_path / "madrazo2017.yaml"
    path.write_text("jet_pt_min_gev: 25.0\n")
    return ["--selection", str(path)]


@pytest.mark.parametrize("earlier, words", [
    (["--selection", "none"], "selection none -> madrazo2017"),
    (["--label", "ttbar"], "label ttbar -> wjets"),
    (_with_other_cut, "selection.jet_pt_min_gev 25.0 -> 30.0"),
])
def test_output_of_other_settings_is_refused(inputs, tmp_path, capsys, earlier, words):
    out = tmp_path / "out"
    earlier = earlier(tmp_path) if callable(earlier) else earlier
    assert main(["convert", str(inputs[1]), "--out", str(out), "--label", "wjets", *earlier]) == 0
    before = contents(out)
    capsys.readouterr()
    assert convert(inputs, out, "--workers", 2) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {out / 'in1.parquet'}: written with other settings ({words}): "
                     f"use another --out or remove it"]
    assert contents(out) == before                      # nothing overwritten, nothing added


def test_other_input_of_the_same_name_is_refused(inputs, tmp_path, capsys):
    """A changed input (other size) and a Parquet file this converter did not write."""
    out = tmp_path / "out"
    changed = rf.write_root(tmp_path / "src" / "in0.root", "Events", [rf.nanoaod_branches(50, seed=1)])
    assert main(["convert", str(changed), "--out", str(out), "--label", "wjets"]) == 0
    table = events_table(synthetic_events("wjets", 5, seed=1), "wjets", ["wjets"])
    write_table(out / "in2.parquet", table, "events", ["wjets"], {"generator": "pythia8"})
    capsys.readouterr()
    assert convert(inputs, out, "--task-index", 1, "--num-tasks", 2) == 2   # in0 is another slice's
    err = capsys.readouterr().err
    assert f"in0.parquet: written with other settings (input_bytes {changed.stat().st_size} -> " \
           f"{inputs[0].stat().st_size})" in err
    (out / "in0.parquet").unlink()
    assert convert(inputs, out) == 2
    assert "in2.parquet: written with other settings (converter none -> engine convert)" in capsys.readouterr().err
    assert sorted(outputs(out)) == ["in2.parquet"]


# --- bad inputs among good ones; damaged outputs -------------------------------------------

def _bad_charge(path: Path) -> Path:
    b = rf.nanoaod_branches(EVENTS, seed=70)
    b["Muon"] = ak.with_field(b["Muon"], ak.values_astype(b["Muon"].pt * 0 + 1000, np.int32), "charge")
    return rf.write_root(path, "Events", [b])


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_input_among_good_ones_then_fixed(inputs, reference, tmp_path, capsys, workers):
    """The bad input passes the checks and fails while converting: the others are written, one
    error line names it, exit 2; once it is fixed, a rerun converts only it."""
    bad = _bad_charge(tmp_path / "in2.root")
    given = [inputs[0], inputs[1], bad, inputs[3]]
    out = tmp_path / "out"
    assert convert(given, out, "--workers", workers) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}: ") and "muons.charge" in errors[0]
    assert "converted 3 of 4 input(s)" in captured.out and "1 of 4 input(s) not converted yet" in captured.out
    assert outputs(out) == {k: v for k, v in reference.items() if k in ("in0.parquet", "in1.parquet",
                                                                        "in3.parquet")}
    assert not (out / "convert.json").exists()
    bad.write_bytes(inputs[2].read_bytes())
    assert convert(given, out, "--workers", workers) == 0
    assert "converted 1 of 4 input(s), 3 skipped as already converted" in capsys.readouterr().out
    assert outputs(out) == {k: v for k, v in reference.items() if k.endswith(".parquet")}
    record = json.loads((out / "convert.json").read_text())
    assert [r["input"] for r in record["converted"]] == [str(p) for p in given] and record["failed"] == []


def test_damaged_output_is_converted_again(inputs, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert(inputs, out) == 0
    data = bytearray((out / "in1.parquet").read_bytes())
    data[-20] ^= 0xFF                                   # the footer
    (out / "in1.parquet").write_bytes(bytes(data))
    capsys.readouterr()
    assert convert(inputs, out) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"warning: {out / 'in1.parquet'}: did not open (")
    assert "converted 1 of 4 input(s), 3 skipped" in captured.out
    assert contents(out) == reference
