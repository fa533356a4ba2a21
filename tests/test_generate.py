"""Pythia 8 + FastJet generation -> canonical Parquet -> read back (tens of events, seconds)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.__main__ import main
from engine.data.canonical.parquet_io import open_parquet
from engine.data.canonical.schema import EVENT_SCHEMA, FATJET_SCHEMA
from engine.data.canonical.selection import load_selection
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.generate import GenerateJob, task_seeds
from engine.data.generation.runner import generate
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _job(process: str, events: int, seed: int = 1, task_events: int = 5000, selection: str = "madrazo2017",
         ecm: float = 7000.0) -> GenerateJob:
    return GenerateJob(process, events, ecm, seed, load_selection(selection), DetectorConfig(), task_events)


def _read(path) -> ak.Array:
    return ak.from_arrow(pq.read_table(path))


@pytest.fixture(scope="module")
def ttbar(tmp_path_factory):
    out = tmp_path_factory.mktemp("ttbar")
    summary = generate(_job("ttbar", 25), out, progress=False)
    return Path(summary["path"]), summary


def test_seeds_and_task_quotas():
    seeds = {task_seeds(s, t)[0] for s in range(20) for t in range(8)}
    assert len(seeds) == 160 and all(1 <= s <= 900_000_000 for s in seeds)
    assert _job("dy", 12, task_events=5).quotas() == [5, 5, 2] and _job("dy", 10, task_events=5).quotas() == [5, 5]
    assert _job("dy", 3).quotas() == [3]


def test_ttbar_file_schema_selection_and_metadata(ttbar):
    path, summary = ttbar
    pf, meta = open_parquet(path / "part-000000.parquet")
    assert pf.schema_arrow.remove_metadata() == EVENT_SCHEMA
    assert meta["kind"] == "events" and meta["class_names"] == ["ttbar"]
    prov = meta["provenance"]
    assert prov["generator"] == "pythia8" and prov["seed"] == 1 and prov["ecm_gev"] == 7000.0
    assert prov["accepted"] == 25 and prov["generated"] >= 25 and prov["sigma_pb"] > 10 and prov["task"] == 0
    assert prov["selection"]["name"] == "madrazo2017" and prov["detector"]["btag"]["working_point"] == 0.679
    ev = _read(path)
    assert len(ev) == 25 and summary["accepted"] == 25
    n_lep = ak.num(ev.electrons) + ak.num(ev.muons)
    assert ak.all(n_lep == 1)
    leptons = ak.concatenate([ev.electrons, ev.muons], axis=1)
    assert ak.all(leptons.pt > 20) and ak.all(abs(leptons.charge) == 1)
    assert ak.all(ev.jets.pt > 30) and ak.all(abs(ev.jets.eta) < 2.4)
    assert ak.all(ev.jets.btagged == (ev.jets.btag > 0.679))
    assert ak.sum(ak.num(ev.jets)) > 25  # ttbar: several jets per event
    assert ak.all(ev.met_phi >= -np.pi) and ak.all(ev.met_phi < np.pi)
    keys = set(zip(ev.run.tolist(), ev.lumi.tolist(), ev.event.tolist()))
    assert len(keys) == 25


def test_same_seed_same_bytes_whatever_the_workers_different_seed_differs(tmp_path):
    """Two workers via the CLI in a subprocess, then the same job in this process: the same bytes."""
    out_cli = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "engine", "generate", "--process", "dy", "--events", "12",
                           "--task-events", "6", "--out", str(out_cli), "--seed", "7", "--workers", "2",
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "generated" in proc.stdout and "cross-section" in proc.stdout
    assert "PYTHIA" not in proc.stdout and "FastJet release" not in proc.stdout
    again = generate(_job("dy", 12, seed=7, task_events=6), tmp_path / "api", progress=False)
    assert _files(out_cli / "dy") == _files(Path(again["path"]))
    first = pq.read_table(out_cli / "dy")
    assert first.num_rows == 12 and sorted(set(first.column("lumi").to_pylist())) == [1, 2]
    other = generate(_job("dy", 12, seed=8, task_events=6), tmp_path / "other", progress=False)
    assert not pq.read_table(other["path"]).equals(first)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_selection_none_keeps_every_event(tmp_path):
    summary = generate(_job("wjets", 10, selection="none"), tmp_path, progress=False)
    assert summary["generated"] == summary["accepted"] == 10
    assert len(_read(summary["path"])) == 10


@pytest.mark.parametrize("process", ["hbb", "qcd"])
def test_fatjets_have_constituents_summing_to_the_jet(tmp_path, process):
    summary = generate(_job(process, 6, ecm=13000.0), tmp_path, progress=False)
    pf, meta = open_parquet(Path(summary["path"]) / "part-000000.parquet")
    assert pf.schema_arrow.remove_metadata() == FATJET_SCHEMA and meta["kind"] == "fatjets"
    jets = _read(summary["path"])
    assert len(jets) == 6
    assert ak.all(jets.fatjet.pt > 300) and ak.all(abs(jets.fatjet.eta) < 2.4)
    assert ak.all(ak.num(jets.constituents) >= 2)
    c = jets.constituents
    vector_pt = np.hypot(ak.sum(c.pt * np.cos(c.phi), axis=1), ak.sum(c.pt * np.sin(c.phi), axis=1))
    np.testing.assert_allclose(ak.to_numpy(vector_pt), ak.to_numpy(jets.fatjet.pt), rtol=1e-3)
    keys = set(zip(jets.lumi.tolist(), jets.event.tolist()))
    assert len(keys) == 6
    if process == "hbb":  # matched to H -> bb: the jet mass sits well above a light-quark jet's
        assert np.median(ak.to_numpy(jets.fatjet.mass)) > 60


@pytest.mark.parametrize("argv,needle", [
    (["--process", "zprime", "--events", "5"], "unknown process"),
    (["--process", "ttbar", "--events", "0"], "--events"),
    (["--process", "ttbar", "--events", "5", "--workers", "0"], "--workers"),
    (["--process", "ttbar", "--events", "5", "--ecm", "1"], "--ecm: 1 GeV is not above the threshold"),
    (["--process", "ttbar", "--events", "5", "--ecm", "300"], "process 'ttbar' (345 GeV)"),
    (["--process", "hbb", "--events", "5", "--ecm", "500"], "--ecm"),
    (["--process", "dy", "--events", "5", "--ecm", "-7"], "--ecm"),
])
def test_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, argv, needle):
    code = main(["generate", *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1 and err.startswith("error:")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_input_via_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine", "generate", "--process", "nope", "--events", "3",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ttbar" in proc.stderr and not list(tmp_path.iterdir())


def test_binary_config_file_is_one_line(tmp_path, capsys):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    for option in ("--selection", "--detector"):
        code = main(["generate", "--process", "dy", "--events", "2", "--out", str(tmp_path / "out"),
                     option, str(tmp_path / "bin.yaml")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"error: {tmp_path / 'bin.yaml'}: not valid YAML (UnicodeDecodeError)"


def test_out_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        code = main(["generate", "--process", "dy", "--events", "2", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"error: {out}: ") and "--out" in err
        assert len(err.splitlines()) == 1


def test_energy_without_events_is_one_line_naming_ecm_from_a_worker(tmp_path):
    """501 GeV passes qcd's threshold (2 x 250 GeV) but Pythia generates nothing there."""
    proc = subprocess.run([sys.executable, "-m", "engine", "generate", "--process", "qcd", "--events", "2",
                           "--workers", "2", "--ecm", "501", "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --ecm: Pythia generated no event of process 'qcd' at 501 GeV")
    assert not any(p.name.endswith(".parquet") or p.name.startswith(".")
                   for p in (tmp_path / "out").iterdir())


def test_energy_pythia_rejects_is_one_line_naming_ecm(tmp_path, capsys):
    """501 GeV passes hbb's threshold (2 x 250 GeV), but Pythia refuses to initialise there."""
    code = main(["generate", "--process", "hbb", "--events", "1", "--ecm", "501", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --ecm: Pythia cannot initialise process 'hbb' at 501 GeV"
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_a_killed_run_are_removed_and_never_read(tmp_path, ttbar):
    """A dead writer's temporary part (a killed run) is hidden from readers and removed by the next run."""
    from engine.data.canonical.summary import summarize

    path, _ = ttbar
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (out / "dy").mkdir(parents=True)
    (out / "dy" / f".part-000000.parquet.tmp-{dead}-abcd").write_bytes((path / "part-000000.parquet").read_bytes())
    with pytest.raises(InputError, match="no .parquet files"):
        summarize(out)
    summary = generate(_job("dy", 3), out, progress=False)
    assert sorted(p.name for p in (out / "dy").iterdir()) == ["_dataset.json", "part-000000.parquet"]
    assert summarize(out)["events"] == 3 == summary["accepted"]
