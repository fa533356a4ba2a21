"""`python -m engine convert`: NanoAOD / Delphes / JSON inputs written here -> canonical Parquet."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests import rootfiles as rf
from engine.commands import convert as cli
from engine.data.canonical.parquet_io import open_parquet
from engine.data.canonical.selection import PRESETS, apply_selection
from engine.data.conversion import convert as cv
from engine.data.conversion import one_file as of
from engine.data.conversion import readers_root as rr
from engine.data.tasks import ExecutorSpec
from engine.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MADRAZO = PRESETS["madrazo2017"]
NONE = PRESETS["none"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Small inputs of every format, with the arrays they were written from."""
    d = tmp_path_factory.mktemp("inputs")
    nano = rf.nanoaod_branches(400, seed=1)
    delphes = rf.delphes_branches(300, seed=2)
    events = rf.json_events(200, seed=3)
    return {
        "nano": (rf.write_root(d / "nano.root", "Events", [nano]), nano),
        "delphes": (rf.write_root(d / "delphes.root", "Delphes", [delphes], naming="dotted"), delphes),
        "delphes_underscore": (rf.write_root(d / "delphes_u.root", "Delphes", [delphes]), delphes),
        "json": (rf.write_json(d / "study.json", events), events),
        "dir": d,
    }


def convert(source: Path, out_dir: Path, selection=MADRAZO, fmt="auto", step_size=100_000,
            label="ttbar") -> tuple[ak.Array, dict]:
    job = of.ConvertJob(Path(source), out_dir / f"{Path(source).stem}.parquet", label, fmt, selection, step_size)
    of.convert_file(job)
    _, meta = open_parquet(job.out)
    return ak.from_arrow(pq.read_table(job.out)), meta


def sorted_desc(values) -> list[float]:
    return sorted((float(np.float32(v)) for v in values), reverse=True)


def check_sorted(out: ak.Array) -> None:
    for name in ("electrons", "muons", "jets"):
        pt = out[name].pt
        assert ak.all(pt[:, 1:] <= pt[:, :-1]), name


# --- NanoAOD -------------------------------------------------------------------------------

def test_nanoaod_none_keeps_every_event_and_value(files, tmp_path):
    path, b = files["nano"]
    out, meta = convert(path, tmp_path, NONE)
    assert len(out) == 400
    np.testing.assert_array_equal(out.event, b["event"].astype(np.int64))
    np.testing.assert_array_equal(out.lumi, b["luminosityBlock"])
    np.testing.assert_array_equal(out.weight, b["genWeight"])
    np.testing.assert_array_equal(out.met_pt, b["MET_pt"])
    check_sorted(out)
    for i in (0, 7, 123, 399):
        assert out.muons.pt[i].tolist() == sorted_desc(b["Muon"].pt[i])
        assert out.jets.pt[i].tolist() == sorted_desc(b["Jet"].pt[i])
        assert sorted(out.electrons.charge[i].tolist()) == sorted(b["Electron"].charge[i].tolist())
        order = np.argsort(-b["Jet"].pt[i].to_numpy(), kind="stable")
        raw = b["Jet"].btagDeepFlavB[i].to_numpy()[order]
        np.testing.assert_array_equal(out.jets.btag[i].to_numpy(), raw)
        np.testing.assert_array_equal(out.jets.btagged[i].to_numpy(), raw > rr.BTAG_MEDIUM_WP["Jet_btagDeepFlavB"])
        np.testing.assert_allclose(out.jets.mass[i].to_numpy(), b["Jet"].mass[i].to_numpy()[order])
    assert meta["class_names"] == ["ttbar"] and set(out.label.tolist()) == {0}
    assert set(out.process.tolist()) == {"ttbar"}
    prov = meta["provenance"]
    assert prov["format"] == "nanoaod" and prov["input"] == "nano.root" and prov["tree"] == "Events"
    assert prov["input_bytes"] == path.stat().st_size and prov["events_read"] == 400
    assert prov["btag_branch"] == "Jet_btagDeepFlavB" and prov["btag_medium_wp"] == 0.2783
    assert prov["selection"]["name"] == "none"


def nanoaod_reference(b: dict, i: int) -> dict | None:
    """The 2017 selection on event i, one object at a time (slow, obviously correct)."""
    mu = [m for m in b["Muon"][i].tolist()
          if m["tightId"] and m["pfRelIso04_all"] < 0.10 and m["pt"] > 20 and abs(m["eta"]) < 2.4]
    el = [e for e in b["Electron"][i].tolist()
          if e["cutBased"] >= 4 and e["pfRelIso03_all"] < 0.10 and e["pt"] > 20 and abs(e["eta"]) < 2.4]
    jets = [j for j in b["Jet"][i].tolist() if j["jetId"] & 2 and j["pt"] > 30 and abs(j["eta"]) < 2.4]
    if len(mu) + len(el) != 1:
        return None
    return {"muons": sorted_desc(m["pt"] for m in mu), "electrons": sorted_desc(e["pt"] for e in el),
            "jets": sorted_desc(j["pt"] for j in jets)}


def test_nanoaod_default_selection_matches_reference(files, tmp_path):
    path, b = files["nano"]
    out, meta = convert(path, tmp_path, MADRAZO)
    expected = {int(b["event"][i]): ref for i in range(400) if (ref := nanoaod_reference(b, i))}
    assert 20 < len(expected) < 400
    assert out.event.tolist() == sorted(expected)
    for row in ak.to_list(out[["event", "muons", "electrons", "jets"]]):
        ref = expected[row["event"]]
        for name in ("muons", "electrons", "jets"):
            assert [o["pt"] for o in row[name]] == ref[name]
    assert meta["provenance"]["selection"]["name"] == "madrazo2017"
    assert meta["provenance"]["events_read"] == 400


def test_fast_selection_equals_selection_module(files):
    path, _ = files["nano"]
    reader = of.open_reader(path, "nanoaod")
    events = next(reader.chunks())
    reader.close()
    for cfg in (MADRAZO, PRESETS["ochoa2023"]):
        slow = events
        for name in ("electrons", "muons", "jets"):
            slow = ak.with_field(slow, slow[name][slow[name].good], name)
        slow = apply_selection(slow, cfg)
        fast = of.select(events, cfg)
        assert fast.event.tolist() == slow.event.tolist()
        for name in ("electrons", "muons", "jets"):
            assert fast[name].pt.tolist() == slow[name].pt.tolist()


@pytest.mark.parametrize("branches, chosen", [
    (("Jet_btagDeepB", "Jet_btagCSVV2"), "Jet_btagDeepB"),
    (("Jet_btagCSVV2",), "Jet_btagCSVV2"),
])
def test_btag_branch_priority(tmp_path, branches, chosen):
    b = rf.nanoaod_branches(50, seed=5, btag_branch=branches[0])
    jets = {f: b["Jet"][f] for f in b["Jet"].fields}
    for extra in branches[1:]:
        jets[extra[len("Jet_"):]] = b["Jet"].pt * 0 + 0.5
    b["Jet"] = ak.zip(jets)
    path = rf.write_root(tmp_path / "btag.root", "Events", [b])
    out, meta = convert(path, tmp_path, NONE)
    assert meta["provenance"]["btag_branch"] == chosen
    wp = rr.BTAG_MEDIUM_WP[chosen]
    assert meta["provenance"]["btag_medium_wp"] == wp
    assert ak.all((out.jets.btag > wp) == out.jets.btagged)


def test_negative_btag_means_no_information(tmp_path):
    b = rf.nanoaod_branches(30, seed=6)
    b["Jet"] = ak.with_field(b["Jet"], b["Jet"].pt * 0 - 2.0, "btagDeepFlavB")
    out, _ = convert(rf.write_root(tmp_path / "neg.root", "Events", [b]), tmp_path, NONE)
    assert ak.all(out.jets.btag == 0) and not ak.any(out.jets.btagged)


def test_chunking_and_determinism(files, tmp_path):
    path, _ = files["nano"]
    one, _ = convert(path, tmp_path / "a", MADRAZO, step_size=100_000)
    many, _ = convert(path, tmp_path / "b", MADRAZO, step_size=37)
    assert ak.to_list(one) == ak.to_list(many)
    convert(path, tmp_path / "c", MADRAZO, step_size=100_000)
    assert (tmp_path / "a" / "nano.parquet").read_bytes() == (tmp_path / "c" / "nano.parquet").read_bytes()


def test_workers_give_the_same_outputs(tmp_path):
    inputs = [rf.write_root(tmp_path / f"in{i}.root", "Events", [rf.nanoaod_branches(150, seed=10 + i)])
              for i in range(3)]
    results = {}
    for workers in (1, 2):
        jobs = cv.plan_jobs(inputs, tmp_path / f"w{workers}", "wjets", selection=MADRAZO)
        run = cv.convert_all(jobs, tmp_path / f"w{workers}", ExecutorSpec(workers=workers))
        assert [r.out for r in run.converted] == [j.out for j in jobs] and not run.failures
        results[workers] = [o.out.read_bytes() for o in run.converted]
    assert results[1] == results[2]


# --- Delphes -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["delphes", "delphes_underscore"])
def test_delphes_round_trip(files, tmp_path, key):
    path, b = files[key]
    out, meta = convert(path, tmp_path, NONE, label="dy")
    assert len(out) == 300 and meta["provenance"]["format"] == "delphes"
    np.testing.assert_array_equal(out.event, ak.flatten(b["Event"].Number))
    np.testing.assert_array_equal(out.weight, ak.flatten(b["Event"].Weight))
    np.testing.assert_array_equal(out.met_pt, ak.flatten(b["MissingET"].MET))
    np.testing.assert_array_equal(out.met_phi, ak.flatten(b["MissingET"].Phi))
    assert ak.all(out.run == 0)
    check_sorted(out)
    for i in (0, 150, 299):
        assert out.jets.pt[i].tolist() == sorted_desc(b["Jet"].PT[i])
        assert out.electrons.pt[i].tolist() == sorted_desc(b["Electron"].PT[i])
    assert ak.all(out.muons.mass == np.float32(rr.MUON_MASS_GEV))
    assert ak.all(out.jets.btagged == (out.jets.btag == 1.0))
    assert ak.sum(out.jets.btagged) == ak.sum(b["Jet"].BTag & 1)
    assert ak.sum(out.jets.mass) == pytest.approx(float(ak.sum(b["Jet"].Mass)), rel=1e-5)


def test_delphes_selection(files, tmp_path):
    path, b = files["delphes"]
    out, _ = convert(path, tmp_path, MADRAZO)
    n_lep = (ak.sum((b["Electron"].PT > 20) & (abs(b["Electron"].Eta) < 2.4), axis=1)
             + ak.sum((b["Muon"].PT > 20) & (abs(b["Muon"].Eta) < 2.4), axis=1))
    assert out.event.tolist() == ak.flatten(b["Event"].Number[n_lep == 1]).tolist()
    assert ak.all(out.jets.pt > 30) and ak.all(abs(out.jets.eta) < 2.4)


# --- JSON ----------------------------------------------------------------------------------

def test_json_round_trip(files, tmp_path):
    path, events = files["json"]
    out, meta = convert(path, tmp_path, NONE, label="wjets")
    assert len(out) == 200 and meta["provenance"]["format"] == "json"
    assert meta["provenance"]["btag_medium_wp"] == 0.679
    assert out.event.tolist() == [int(k) for k in events]
    assert out.lumi.tolist() == [ev["lumi"] for ev in events.values()]
    check_sorted(out)
    for i, ev in enumerate(events.values()):
        assert out.jets.pt[i].tolist() == sorted_desc(j["pt"] for j in ev["jet"])
        csv = sorted(((j["pt"], j["CSV"]) for j in ev["jet"]), reverse=True)
        assert out.jets.btag[i].tolist() == [float(np.float32(max(c, 0.0))) for _, c in csv]
        assert out.jets.btagged[i].tolist() == [c > 0.679 for _, c in csv]
        assert out.met_pt[i] == pytest.approx(ev["met"], rel=1e-6)
    assert ak.all(out.jets.mass == 0) and ak.all(out.electrons.mass == np.float32(rr.ELECTRON_MASS_GEV))
    assert ak.all(out.muons.charge == 0)


def test_json_default_selection(files, tmp_path):
    path, events = files["json"]
    out, _ = convert(path, tmp_path, MADRAZO)
    expected = []
    for key, ev in events.items():
        leptons = [lep for lep in ev["electron"] + ev["muon"] if lep["tightID"] and lep["tightIso"]
                   and lep["pt"] > 20 and abs(lep["eta"]) < 2.4]
        if len(leptons) == 1:
            expected.append(int(key))
    assert out.event.tolist() == expected and 0 < len(expected) < 200
    assert ak.all(out.jets.pt > 30)


# --- bad input -----------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "convert", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def bad_inputs(d: Path, nano: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (input, extra CLI options, words the error must contain)."""
    data = nano.read_bytes()
    (d / "truncated.root").write_bytes(data[:len(data) // 2])
    (d / "text.root").write_text("not a ROOT file at all\n")
    b = rf.nanoaod_branches(40, seed=7)
    del b["MET_phi"]
    rf.write_root(d / "no_met_phi.root", "Events", [b])
    b = rf.nanoaod_branches(40, seed=8)
    b["MET_pt"][5] = np.nan
    rf.write_root(d / "nan.root", "Events", [b])
    rf.write_root(d / "other_tree.root", "Tree", [rf.nanoaod_branches(10, seed=9)])
    return {
        "missing": (d / "missing.root", [], "no such file"),
        "truncated": (d / "truncated.root", [], "truncated"),
        "not_root": (d / "text.root", [], "neither a ROOT file nor JSON"),
        "not_root_forced": (d / "text.root", ["--format", "nanoaod"], "not a ROOT file"),
        "missing_branch": (d / "no_met_phi.root", [], "'MET_phi'"),
        "nan": (d / "nan.root", ["--selection", "none"], "NaN or infinite value(s) in branch 'MET_pt'"),
        "unknown_format": (nano, ["--format", "lhe"], "unknown format"),
        "wrong_tree": (d / "other_tree.root", [], "no 'Events' (NanoAOD) or 'Delphes' tree"),
    }


@pytest.fixture(scope="module")
def bad(files) -> dict:
    d = files["dir"] / "bad"
    d.mkdir()
    return bad_inputs(d, files["nano"][0])


@pytest.mark.parametrize("case", ["missing", "truncated", "not_root", "not_root_forced", "missing_branch",
                                  "nan", "unknown_format", "wrong_tree"])
def test_bad_input_one_line_exit_2_nothing_written(bad, tmp_path, case):
    source, options, words = bad[case]
    proc = run_cli(source, "--out", tmp_path / "out", "--label", "ttbar", *options)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert words in lines[0]
    if case != "unknown_format":
        assert str(source) in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_nan_in_json_names_the_field(tmp_path):
    events = rf.json_events(5, seed=4)
    events["3"]["met_phi"] = math.nan
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(events))
    with pytest.raises(InputError, match="event field 'met_phi'"):
        convert(path, tmp_path, NONE)
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*"))


def test_bad_json_and_missing_btag(tmp_path):
    (tmp_path / "broken.json").write_text('{"1": {"met": 1.0,')
    with pytest.raises(InputError, match="not valid JSON"):
        convert(tmp_path / "broken.json", tmp_path)
    b = rf.nanoaod_branches(10, seed=1)
    b["Jet"] = b["Jet"][["pt", "eta", "phi", "mass"]]
    with pytest.raises(InputError, match="no b-tag branch"):
        convert(rf.write_root(tmp_path / "nobtag.root", "Events", [b]), tmp_path)


def test_skip_bad_converts_the_good_and_reports_the_bad(files, bad, tmp_path):
    good = files["nano"][0]
    proc = run_cli(bad["truncated"][0], good, bad["missing"][0], "--out", tmp_path / "out",
                   "--label", "ttbar", "--skip-bad", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["convert.json", "nano.parquet"]
    record = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert [(r["input"], r["output"]) for r in record["converted"]] == [(str(good), "nano.parquet")]
    rows = open_parquet(tmp_path / "out" / "nano.parquet")[0].metadata.num_rows
    assert record["converted"][0]["events_accepted"] == rows
    assert sorted(f["input"] for f in record["failed"]) == sorted(str(bad[k][0]) for k in ("truncated",
                                                                                          "missing"))
    assert "truncated" in next(f["problem"] for f in record["failed"] if "truncated" in f["input"])
    proc = run_cli(bad["truncated"][0], bad["missing"][0], "--out", tmp_path / "out2",
                   "--label", "ttbar", "--skip-bad")
    assert proc.returncode == 2 and proc.stderr.count("error: ") == 2


def test_without_skip_bad_nothing_is_converted(files, bad, tmp_path):
    args = cli_args([files["nano"][0], bad["missing_branch"][0]], tmp_path / "out")
    with pytest.raises(InputError, match="MET_phi"):
        cli.run(args)
    assert not (tmp_path / "out").exists()


def test_same_stem_twice_is_refused(files, tmp_path):
    with pytest.raises(InputError, match="same output"):
        cv.plan_jobs([files["nano"][0], files["dir"] / "nano.json"], tmp_path, "ttbar")


def cli_args(inputs, out: Path, *options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args([*map(str, inputs), "--out", str(out), "--label", "ttbar", *options])


# --- wrong layouts and types, all or nothing -----------------------------------------------

def _edited(path: Path, edit) -> Path:
    b = rf.nanoaod_branches(40, seed=12)
    edit(b)
    return rf.write_root(path, "Events", [b])


def _with_field(collection: str, name: str, change):
    def edit(b):
        b[collection] = ak.with_field(b[collection], change(b[collection][name]), name)
    return edit


def _jagged_met(b):
    two = np.full(40, 2)
    b["MET"] = ak.zip({"pt": ak.unflatten(np.ones(80, np.float32), two),
                       "phi": ak.unflatten(np.zeros(80, np.float32), two)})
    del b["MET_pt"], b["MET_phi"]


def _flat_muon_charge(b):
    b["Muon"] = b["Muon"][[f for f in b["Muon"].fields if f != "charge"]]
    b["Muon_charge"] = np.ones(40, np.int32)


LAYOUT_CASES = {
    "jagged_met": (_jagged_met, "branch 'MET_pt' must hold one number per event"),
    "flat_muon_charge": (_flat_muon_charge, "branch 'Muon_charge' must hold a list per event"),
    "charge_1000": (_with_field("Muon", "charge", lambda c: c * 1000), "'muons.charge' holds the value"),
    "charge_fraction": (_with_field("Muon", "charge", lambda c: c * 0.5), "non-integer value"),
    "float_jet_id": (_with_field("Jet", "jetId", lambda v: ak.values_astype(v, np.float32)),
                     "'Jet_jetId' holds float32 values, expected integers"),
    "huge_pt": (_with_field("Jet", "pt", lambda v: ak.values_astype(v, np.float64) * 1e300),
                "beyond the range of float32"),
    "event_beyond_int64": (lambda b: b.update(event=np.full(40, 2**63 + 1, np.uint64)),
                           "'event' holds the value 9223372036854775809"),
}


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_wrong_layout_or_type_is_one_line_exit_2(tmp_path, capsys, case):
    from engine.__main__ import main

    edit, words = LAYOUT_CASES[case]
    source = _edited(tmp_path / f"{case}.root", edit)
    code = main(["convert", str(source), "--out", str(tmp_path / "out"), "--label", "ttbar",
                 "--selection", "none"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {source}: "), lines
    assert words in lines[0]
    assert not (tmp_path / "out").exists()


def test_root_file_truncated_to_2kb(files, tmp_path):
    data = files["nano"][0].read_bytes()
    for size in (2048, 4096, 400, len(data) - 1):
        path = tmp_path / f"cut{size}.root"
        path.write_bytes(data[:size])
        with pytest.raises(InputError, match="truncated|unreadable|not a ROOT") as info:
            of.convert_file(of.ConvertJob(path, tmp_path / "out" / "x.parquet", "ttbar"))
        assert str(path) in str(info.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_during_conversion_keeps_the_others(files, tmp_path, workers):
    """The bad file passes the checks and fails only while converting, after a good one: the good
    output is written and stays, the failure is raised once the others completed."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.parquet").write_bytes(b"kept as it was")
    bad = _edited(tmp_path / "zbad.root", LAYOUT_CASES["charge_1000"][0])
    jobs = cv.plan_jobs([bad, files["nano"][0]], out, "ttbar", selection=NONE)
    with pytest.raises(cv.ConvertFailures, match="muons.charge") as info:
        cv.convert_all(jobs, out, ExecutorSpec(workers=workers))
    run = info.value.run
    assert [r.out for r in run.converted] == [out / "nano.parquet"] and run.remaining == 1
    assert [(f.input, f.source) for f in run.failures] == [(str(bad), str(bad))]
    assert sorted(p.name for p in out.iterdir()) == ["earlier.parquet", "nano.parquet"]
    assert (out / "earlier.parquet").read_bytes() == b"kept as it was"
    assert open_parquet(out / "nano.parquet")[0].metadata.num_rows == 400
    run = cv.convert_all(jobs, out, skip_bad=True)
    assert run.converted == [] and [j.source for j in run.skipped] == [jobs[1].source]
    assert [f.input for f in run.failures] == [str(bad)]
    assert sorted(p.name for p in out.iterdir()) == ["convert.json", "earlier.parquet", "nano.parquet"]
    record = json.loads((out / "convert.json").read_text())
    assert record["failed"][0]["input"] == str(bad) and "muons.charge" in record["failed"][0]["problem"]
    assert [r["output"] for r in record["converted"]] == ["nano.parquet"]
    assert record["converted"][0]["events_read"] == record["converted"][0]["events_accepted"] == 400


def test_stale_temporaries_of_a_killed_run_are_removed(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    for name in (f".nano.parquet.tmp-{dead}-abcd", f".convert.json.tmp-{dead}-abcd"):
        (out / name).write_bytes(b"half")
    running = out / f".nano.parquet.tmp-{os.getppid()}-abcd"     # a writer still at work
    running.write_bytes(b"half")
    cv.convert_all(cv.plan_jobs([files["nano"][0]], out, "ttbar"), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["convert.json", "nano.parquet", running.name])


def test_output_that_is_a_folder(files, tmp_path):
    out = tmp_path / "out"
    (out / "nano.parquet").mkdir(parents=True)
    with pytest.raises(InputError, match="is a folder") as info:
        cv.convert_all(cv.plan_jobs([files["nano"][0]], out, "ttbar"), out)
    assert str(out / "nano.parquet") in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["nano.parquet"]


def test_output_folder_that_cannot_be_created(files, tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(InputError, match="--out") as info:
            cv.convert_all(cv.plan_jobs([files["nano"][0]], tmp_path / "elsewhere", "ttbar"), out)
        assert str(out) in str(info.value)


# --- corrupt ROOT and JSON: an InputError, never a traceback -------------------------------

FUZZ_CASES = {"root": 120, "json": 200}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FUZZ_CASES))
def test_corrupt_inputs_convert_or_stop_with_one_line(tmp_path, fmt):
    """Seeded flips, truncations, deletions, insertions, overwrites. ROOT's uncompressed baskets and
    JSON text carry no checksum, so a damaged value there can convert; anything else is an
    InputError naming the file, and a failed conversion writes nothing."""
    if fmt == "root":
        source = rf.write_root(tmp_path / "src.root", "Events", [rf.nanoaod_branches(150, seed=21)])
    else:
        source = rf.write_json(tmp_path / "src.json", rf.json_events(30, seed=22))
    original = source.read_bytes()
    rng = np.random.default_rng({"root": 31, "json": 32}[fmt])
    outcomes = {"converted": 0, "error": 0}
    for case in range(FUZZ_CASES[fmt]):
        description, data = rf.corrupt(original, rng)
        bad = tmp_path / f"bad.{fmt}"
        bad.write_bytes(data)
        out = tmp_path / "out" / f"case{case}.parquet"
        try:
            of.convert_file(of.ConvertJob(bad, out, "ttbar", selection=NONE))
            outcomes["converted"] += 1
            assert open_parquet(out)[0].metadata.num_rows >= 0
        except InputError as exc:
            outcomes["error"] += 1
            assert str(bad) in str(exc) and "\n" not in str(exc), (description, str(exc))
            assert not out.exists() and not list(out.parent.glob(".*")), description
    assert outcomes["error"] > FUZZ_CASES[fmt] // 2, outcomes


def _delphes_float_btag(b):
    b["Jet"] = ak.with_field(b["Jet"], ak.values_astype(b["Jet"].BTag, np.float32), "BTag")


def _delphes_flat_met(b):
    del b["MissingET"]
    b.update({"MissingET.MET": np.ones(30, np.float32), "MissingET.Phi": np.zeros(30, np.float32)})


@pytest.mark.parametrize("edit,words", [
    (_delphes_float_btag, "'Jet.BTag' holds float32 values, expected integers"),
    (_delphes_flat_met, "branch 'MissingET.MET' must hold a list per event"),
])
def test_delphes_wrong_types_are_one_line(tmp_path, edit, words):
    b = rf.delphes_branches(30, seed=5)
    edit(b)
    source = rf.write_root(tmp_path / "d.root", "Delphes", [b], naming="dotted")
    with pytest.raises(InputError, match=words):
        cv.convert_all(cv.plan_jobs([source], tmp_path / "out", "ttbar", selection=NONE), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change,words", [
    (lambda e: e["1"].update(run=2**70), "integer beyond 64 bits"),
    (lambda e: e["1"]["jet"].append({"pt": 30.0, "eta": 0.0, "phi": 0.0, "CSV": 0.5, "tightID": True,
                                     "mass": 1e39}), "'jets.mass' holds the value 1e+39"),
    (lambda e: e["1"].update(muon=[{"pt": 30.0, "eta": 0.0, "phi": 0.0, "tightID": True, "tightIso": True,
                                    "charge": 1000}]), "'muons.charge' holds the value 1000"),
    (lambda e: e["1"].update(jet="none"), "event field 'jet' must be a list of objects"),
    (lambda e: e["1"].update(lumi=1.5), "column 'lumi' holds the non-integer value 1.5"),
    (lambda e: e.update({str(2**70): e["1"]}), "event keys must be event numbers"),
])
def test_json_values_that_do_not_fit(tmp_path, change, words):
    events = rf.json_events(5, seed=6)
    change(events)
    source = rf.write_json(tmp_path / "e.json", events)
    with pytest.raises(InputError, match=re.escape(words)) as info:
        convert(source, tmp_path / "out", NONE)
    assert str(source) in str(info.value)
