"""Pileup: the minimum-bias library, the overlay, CHS, jet areas and rho, vertices, and the command."""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.__main__ import main
from engine.data.canonical.parquet_io import open_parquet
from engine.data.canonical.schema import EVENT_PILEUP_SCHEMA, EVENT_SCHEMA
from engine.data.canonical.selection import load_selection
from engine.data.generation import pileup, subtraction
from engine.data.generation.detector import DetectorConfig, JetConfig, NEUTRINOS
from engine.data.generation.generate import (GenerateJob, _charge_lookup, batch_particles, make_worker_pythia,
                                             reconstruct_events)
from engine.data.generation.processes import get_process
from engine.data.generation.runner import generate

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_EVENTS = 50
SMALL = ["--process", "dy", "--events", "12", "--task-events", "6", "--seed", "4", "--no-progress",
         "--pileup-library-events", str(LIBRARY_EVENTS)]
ONE_TASK = [a if a != "12" else "6" for a in SMALL]


@pytest.fixture(scope="module")
def library_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pileup-library")
    pileup.ensure_library(folder, pileup.PileupConfig(mu=1, sigma_z_mm=50, library_events=LIBRARY_EVENTS),
                          7000.0, 4)
    return folder


@pytest.fixture(scope="module")
def hard(library_folder):
    """One Pythia batch of ttbar events, the library and the charge lookup."""
    pythia = make_worker_pythia(get_process("ttbar"), 7000.0, 11)
    charge_of = _charge_lookup(pythia)
    path = next(library_folder.glob("*.parquet"))
    return pythia.nextBatch(40), pileup.load_library(path, charge_of), charge_of


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*")) if p.is_file()}


def _reconstruct(hard, mu: float, detector: DetectorConfig, seed: int = 3, overlay=None):
    batch, library, charge_of = hard
    cfg = pileup.PileupConfig(mu=mu, sigma_z_mm=56.0) if mu else None
    if overlay is None and cfg is not None:
        overlay = pileup.draw_overlay(len(batch), cfg, library, np.random.default_rng(seed))
    particles, flat, counts = batch_particles(batch, charge_of, overlay)
    events = reconstruct_events(particles, flat, counts, detector, np.random.default_rng(seed), overlay)
    return events, particles


# ---------------------------------------------------------------- the command

def test_same_seed_same_bytes_for_one_and_two_workers_and_rerun_skips(tmp_path, capsys, library_folder):
    for workers in ("1", "2"):
        assert main(["generate", *SMALL, "--pileup", "4", "--out", str(tmp_path / workers),
                     "--workers", workers, "--pileup-library", str(library_folder)]) == 0
    one, two = _files(tmp_path / "1" / "dy"), _files(tmp_path / "2" / "dy")
    assert one == two and len(one) == 3
    assert main(["generate", *SMALL, "--pileup", "4", "--out", str(tmp_path / "1")]) == 0
    assert "0 task(s) run, 2 already complete" in capsys.readouterr().out
    assert not (tmp_path / "1" / ".pileup").exists()       # nothing to run: no library made
    events = ak.from_arrow(pq.read_table(tmp_path / "1" / "dy" / "part-000000.parquet"))
    assert events.fields[-2:] == ["n_interactions", "n_vertices"]
    assert ak.all(events.n_vertices >= 1) and ak.all(events.n_vertices <= events.n_interactions + 1)
    plain = ["--process", "wjets", "--events", "6", "--seed", "5", "--no-progress"]
    assert main(["generate", *plain, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()        # events with and without pileup columns shard together
    assert main(["shard", "--input", str(tmp_path / "1"), str(tmp_path / "plain"), "--out",
                 str(tmp_path / "shards"), "--split", "0.5,0.25,0.25"]) == 0
    assert main(["inspect", str(tmp_path / "shards")]) == 0


def test_pileup_zero_is_byte_identical_to_no_flag_and_writes_no_pileup_columns(tmp_path):
    assert main(["generate", *ONE_TASK, "--out", str(tmp_path / "none")]) == 0
    assert main(["generate", *ONE_TASK, "--pileup", "0", "--out", str(tmp_path / "zero")]) == 0
    assert _files(tmp_path / "none" / "dy") == _files(tmp_path / "zero" / "dy")
    assert not (tmp_path / "zero" / ".pileup").exists()
    pf, meta = open_parquet(tmp_path / "zero" / "dy" / "part-000000.parquet")
    assert pf.schema_arrow.remove_metadata().equals(EVENT_SCHEMA) and "pileup" not in meta["provenance"]
    assert "pileup" not in meta["provenance"]["detector"]


def test_profile_is_recorded_and_other_pileup_settings_are_refused(tmp_path, capsys, library_folder):
    out = tmp_path / "out"
    assert main(["generate", *ONE_TASK, "--pileup-profile", "2011", "--out", str(out),
                 "--pileup-library", str(library_folder)]) == 0
    pf, meta = open_parquet(out / "dy" / "part-000000.parquet")
    assert pf.schema_arrow.remove_metadata().equals(EVENT_PILEUP_SCHEMA) and meta["schema_version"] == 2
    assert meta["provenance"]["pileup"] == {"mu": 9.0, "sigma_z_mm": 56.0, "library_events": LIBRARY_EVENTS,
                                            "profile": "2011"}
    assert meta["provenance"]["detector"]["pileup"]["chs"] is True
    capsys.readouterr()
    assert main(["generate", *ONE_TASK, "--pileup", "9", "--out", str(out)]) == 2
    assert "other settings (pileup.profile 2011 -> None)" in capsys.readouterr().err
    assert main(["generate", *ONE_TASK, "--out", str(out)]) == 2
    assert "other settings (pileup {" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--pileup", "-1"], "error: --pileup: must be a mean number of interactions >= 0, got -1"),
    (["--pileup", "nan"], "error: --pileup: must be a mean number"),
    (["--pileup-profile", "2012"], "error: --pileup-profile: unknown profile '2012' (known: 2011, 2015)"),
    (["--pileup", "9", "--pileup-profile", "2011"], "error: --pileup: give either --pileup MU or"),
    (["--pileup", "9", "--pileup-library-events", "0"], "error: --pileup-library-events: must be at least 1"),
])
def test_bad_pileup_options_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert main(["generate", *SMALL, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(needle) and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*.parquet"))


# ---------------------------------------------------------------- the library

def test_library_is_reused_and_a_broken_or_foreign_one_is_made_again(tmp_path, library_folder, monkeypatch):
    cfg = pileup.PileupConfig(mu=1, sigma_z_mm=50, library_events=LIBRARY_EVENTS)
    path = pileup.library_path(library_folder, cfg, 7000.0, 4)
    good, stamp = path.read_bytes(), path.stat().st_mtime_ns
    assert pileup.ensure_library(library_folder, cfg, 7000.0, 4) == path and path.stat().st_mtime_ns == stamp
    table = pq.read_table(path)
    assert table.num_rows == LIBRARY_EVENTS and json.loads(table.schema.metadata[pileup.LIBRARY_KEY])["seed"] == 4
    made = []                 # Pythia's minimum-bias set-up takes seconds: the events are seed 4's
    monkeypatch.setattr(pileup, "generate_library", lambda settings: made.append(settings["seed"]) or table)
    broken = pileup.library_path(tmp_path, cfg, 7000.0, 4)
    broken.write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        pileup.ensure_library(tmp_path, cfg, 7000.0, 4)
    assert pq.read_table(broken).equals(table) and made == [4]
    foreign = pileup.library_path(tmp_path, cfg, 7000.0, 5)
    foreign.write_bytes(good)                      # seed 4's library under seed 5's name
    with pytest.warns(UserWarning, match="other settings"):
        pileup.ensure_library(tmp_path, cfg, 7000.0, 5)
    assert made == [4, 5] and foreign.read_bytes() != good
    assert json.loads(pq.read_schema(foreign).metadata[pileup.LIBRARY_KEY])["seed"] == 5


KILL_SCRIPT = """
import sys
from pathlib import Path
from engine.data.generation import pileup
cfg = pileup.PileupConfig(mu=1, sigma_z_mm=50, library_events=int(sys.argv[2]))
print("start", flush=True)
pileup.ensure_library(Path(sys.argv[1]), cfg, 7000.0, 5)
"""


@pytest.mark.slow
def test_a_killed_library_generation_leaves_no_library_and_the_rerun_makes_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), "1500"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    time.sleep(2.0)                               # Pythia is set up and generating
    assert proc.poll() is None, "the library was finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(tmp_path.glob("*.parquet"))
    cfg = pileup.PileupConfig(mu=1, sigma_z_mm=50, library_events=1500)
    path = pileup.ensure_library(tmp_path, cfg, 7000.0, 5)
    assert pq.read_metadata(path).num_rows == 1500
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ---------------------------------------------------------------- the overlay

def test_overlay_counts_are_poisson_and_particles_come_whole_from_the_library():
    sizes = np.array([3, 1, 4, 2])
    library = pileup.Library({"px": np.arange(10.0), "id": np.arange(10)}, np.concatenate([[0], np.cumsum(sizes)]))
    cfg = pileup.PileupConfig(mu=9.0, sigma_z_mm=50.0)
    overlay = pileup.draw_overlay(20000, cfg, library, np.random.default_rng(1))
    n = overlay.n_pileup
    assert abs(n.mean() - 9.0) < 4 * math.sqrt(9.0 / len(n)) and abs(n.var() - 9.0) < 0.5
    assert abs(overlay.hard_z.std() - 50.0) < 1.5 and abs(overlay.particles["z"].std() - 50.0) < 1.5
    vertex, ids = overlay.particles["vertex"][: overlay.counts[0]], overlay.particles["id"][: overlay.counts[0]]
    assert vertex.max() == n[0] and np.all(np.diff(vertex) >= 0)
    for v in range(1, n[0] + 1):              # each interaction is one whole library event
        chunk = ids[vertex == v]
        assert any(np.array_equal(chunk, np.arange(s, s + k)) for s, k in zip(library.offsets, sizes))
    again = pileup.draw_overlay(20000, cfg, library, np.random.default_rng(1))
    assert np.array_equal(again.particles["id"], overlay.particles["id"])


def test_merge_puts_each_events_pileup_after_its_own_particles():
    overlay = pileup.Overlay(np.array([1, 2]), np.array([0.5, -0.5]),
                             {"id": np.array([7, 8, 9]), "vertex": np.array([1, 1, 2]),
                              "z": np.array([10.0, -3.0, 4.0])}, np.array([1, 2]))
    flat = {"id": np.array([1, 2, 3]), "status": np.array([1, 1, 1]), "mother1": np.array([0, 1, 0]),
            "daughter1": np.zeros(3, int), "daughter2": np.zeros(3, int)}
    merged, counts = pileup.merge(flat, np.array([2, 1]), overlay)
    assert counts.tolist() == [3, 3]
    assert merged["id"].tolist() == [1, 2, 7, 3, 8, 9]
    assert merged["vertex"].tolist() == [0, 0, 1, 0, 1, 2]
    assert merged["z"].tolist() == [0.5, 0.5, 10.0, -0.5, -3.0, 4.0]
    assert merged["mother1"].tolist() == [0, 1, 0, 0, 0, 0]


# ---------------------------------------------------------------- reconstruction

def test_more_pileup_more_jets_and_worse_met(hard):
    raw = dataclasses.replace(DetectorConfig(), pileup=dataclasses.replace(DetectorConfig().pileup, chs=False,
                                                                           rho_correction=False))
    quiet, particles = _reconstruct(hard, 0, raw)
    busy, _ = _reconstruct(hard, 40, raw)
    assert ak.mean(ak.num(busy.jets)) > ak.mean(ak.num(quiet.jets)) + 1
    is_nu = np.isin(np.abs(ak.to_numpy(ak.flatten(particles.id))), NEUTRINOS)
    nu = particles[ak.unflatten(is_nu, ak.num(particles, axis=1)) & (particles.status > 0)]
    true_x, true_y = ak.to_numpy(ak.sum(nu.px, axis=1)), ak.to_numpy(ak.sum(nu.py, axis=1))

    def rms(events):
        dx = ak.to_numpy(events.met_pt * np.cos(events.met_phi)) - true_x
        dy = ak.to_numpy(events.met_pt * np.sin(events.met_phi)) - true_y
        return math.sqrt(np.mean(dx ** 2 + dy ** 2) / 2)

    assert rms(busy) > 1.5 * rms(quiet)
    assert ak.all(busy.n_interactions >= 0) and "n_vertices" not in quiet.fields


def test_rho_area_correction_brings_jet_pt_back_toward_no_pileup(hard):
    exact = dataclasses.replace(DetectorConfig(), jets=JetConfig(stochastic=0.0, constant=0.0))
    uncorrected = dataclasses.replace(exact, pileup=dataclasses.replace(exact.pileup, rho_correction=False))
    quiet, _ = _reconstruct(hard, 0, exact)
    raw, _ = _reconstruct(hard, 20, uncorrected)
    corrected, _ = _reconstruct(hard, 20, exact)

    def leading(events):
        central = events.jets[abs(events.jets.eta) < 2.4]
        return float(ak.mean(ak.max(central.pt, axis=1)))

    assert leading(raw) > leading(quiet) + 2.0
    assert abs(leading(corrected) - leading(quiet)) < 0.5 * abs(leading(raw) - leading(quiet))


def _empty_batch(n: int) -> ak.Array:
    def empty(dtype):
        return ak.unflatten(np.zeros(0, dtype), np.zeros(n, np.int64))
    prt = ak.zip({"id": empty(np.int32), "status": empty(np.int32), "mother1": empty(np.int32),
                  "daughter1": empty(np.int32), "daughter2": empty(np.int32),
                  "p": ak.zip({c: empty(np.float64) for c in ("px", "py", "pz", "e")}), "m": empty(np.float64)})
    return ak.zip({"prt": prt}, depth_limit=1)


def test_chs_keeps_charged_pileup_out_of_the_jets(hard):
    """Only pileup, every interaction 100 mm from the primary vertex: with CHS the jets are those of
    the pileup without its charged particles in the tracker."""
    _, library, charge_of = hard
    n = 30
    cfg = pileup.PileupConfig(mu=8.0, sigma_z_mm=50.0)
    drawn = pileup.draw_overlay(n, cfg, library, np.random.default_rng(5))
    far = pileup.Overlay(drawn.n_pileup, np.zeros(n), dict(drawn.particles, z=np.full(len(drawn.particles["z"]),
                                                                                     100.0)), drawn.counts)
    tracked = (drawn.particles["charge"] != 0) & (np.abs(drawn.particles["eta"]) < 2.5)
    assert tracked.sum() > 100
    neutral_only = pileup.Overlay(far.n_pileup, far.hard_z, {k: v[~tracked] for k, v in far.particles.items()},
                                  np.bincount(np.repeat(np.arange(n), drawn.counts)[~tracked], minlength=n))
    exact = dataclasses.replace(DetectorConfig(), jets=JetConfig(stochastic=0.0, constant=0.0, pt_min_gev=4.0))
    no_chs = dataclasses.replace(exact, pileup=dataclasses.replace(exact.pileup, chs=False))
    batch = _empty_batch(n)

    def jets(detector, overlay):
        particles, flat, counts = batch_particles(batch, charge_of, overlay)
        return reconstruct_events(particles, flat, counts, detector, np.random.default_rng(1), overlay)

    with_chs, expected, without = jets(exact, far), jets(no_chs, neutral_only), jets(no_chs, far)
    kinematic = ["pt", "eta", "phi", "mass"]
    assert ak.sum(ak.num(with_chs.jets)) > 0
    assert ak.to_list(with_chs.jets[kinematic]) == ak.to_list(expected.jets[kinematic])
    assert ak.to_list(without.jets[kinematic]) != ak.to_list(with_chs.jets[kinematic])
    assert ak.all(with_chs.n_vertices <= 1) and ak.sum(with_chs.n_vertices) > n / 2   # one z: merged


def test_chs_removes_only_tracks_away_from_the_primary_vertex():
    cfg = DetectorConfig().pileup
    flat = {"status": np.ones(6, int), "charge": np.array([1, -1, 0, 1, 1, 1]),
            "eta": np.array([0.0, 1.0, 0.0, 3.0, 0.5, -2.0]), "z": np.array([0.2, 5.0, 5.0, 5.0, 0.3, -30.0])}
    removed = subtraction.chs_removed(flat, np.array([6]), np.array([0.2]), cfg, np.random.default_rng(0))
    assert removed.tolist() == [False, True, False, False, False, True]


def test_ghost_areas_of_an_isolated_jet_and_rho_of_a_uniform_event():
    jet = ak.Array([[{"px": 50 * math.cos(1.0), "py": 50 * math.sin(1.0), "pz": 50 * math.sinh(0.3),
                      "E": 50 * math.cosh(0.3)}]])
    _, area = subtraction.antikt_with_areas(jet, 0.4, 5.0, 5.0, 0.05)
    assert abs(float(area[0, 0]) - math.pi * 0.16) < 0.03
    assert subtraction.jagged_median(ak.Array([[3.0, 1.0, 2.0], [], [4.0, 1.0]])).tolist() == [2.0, 0.0, 2.5]
    rng = np.random.default_rng(2)
    n = 6000                      # a flat 2 GeV per unit area of soft particles
    eta, phi = rng.uniform(-3.0, 3.0, n), rng.uniform(-math.pi, math.pi, n)
    pt = np.full(n, 2.0 * 6.0 * 2 * math.pi / n)
    soft = ak.unflatten(ak.zip({"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta),
                                "E": pt * np.cosh(eta)}), [n])
    assert 1.6 < subtraction.rho(soft, DetectorConfig().pileup)[0] < 2.4
    empty = ak.unflatten(ak.zip({c: np.zeros(0) for c in ("px", "py", "pz", "E")}), [0])
    assert subtraction.rho(empty, DetectorConfig().pileup)[0] < 1e-90     # ghosts only


def test_vertices_need_two_tracks_and_close_ones_merge():
    cfg = DetectorConfig().pileup
    #            event 0: hard (2 tracks), pu 1 (1 track), pu 2 and 3 within 1 mm (merged) | event 1: none
    flat = {"status": np.ones(9, int), "charge": np.array([1, 1, 1, 1, 1, 1, 1, 0, 0]),
            "pt": np.array([1, 1, 1, 1, 1, 1, 1, 1, 1.0]), "eta": np.zeros(9),
            "vertex": np.array([0, 0, 1, 2, 2, 3, 3, 0, 1]),
            "z": np.array([0.0, 0.0, 9.0, 20.0, 20.0, 20.6, 20.6, 0.0, 3.0])}
    assert subtraction.count_vertices(flat, np.array([7, 2]), cfg).tolist() == [2, 0]


def test_jobs_with_pileup_generate_fat_jets_too(tmp_path, library_folder):
    job = GenerateJob("qcd", 3, 7000.0, 4, load_selection("madrazo2017"), DetectorConfig(),
                      pileup=pileup.PileupConfig(mu=3.0, sigma_z_mm=46.0, library_events=LIBRARY_EVENTS))
    summary = generate(job, tmp_path, progress=False, library_folder=library_folder)
    assert summary["accepted"] == 3
    _, meta = open_parquet(Path(summary["path"]) / "part-000000.parquet")
    assert meta["schema_version"] == 2 and meta["provenance"]["pileup"]["mu"] == 3.0


def test_chs_removes_charged_pileup_from_fat_jets(tmp_path, library_folder):
    def charged_constituents(chs: bool) -> int:
        detector = dataclasses.replace(DetectorConfig(), pileup=dataclasses.replace(DetectorConfig().pileup, chs=chs))
        job = GenerateJob("qcd", 3, 7000.0, 4, load_selection("madrazo2017"), detector,
                          pileup=pileup.PileupConfig(mu=30.0, sigma_z_mm=46.0, library_events=LIBRARY_EVENTS))
        summary = generate(job, tmp_path / str(chs), progress=False, library_folder=library_folder)
        charge = pq.read_table(Path(summary["path"]) / "part-000000.parquet").column("constituents")
        return int(np.count_nonzero(ak.flatten(ak.from_arrow(charge).charge)))

    assert charged_constituents(True) < charged_constituents(False)


def test_prompt_leptons_come_from_a_w_or_z_through_their_own_copies():
    from benchmarks.pileup_physics import prompt_leptons

    #        0 W   1 e (copy parent)  2 e final  3 B   4 mu from B   5 pileup e   6 soft e from W
    flat = {"id": np.array([24, 11, 11, 511, 13, 11, -11]), "status": np.array([-22, -51, 1, -91, 1, 1, 1]),
            "mother": np.array([-1, 0, 1, -1, 3, -1, 0]), "pt": np.array([0, 40, 38, 0, 30, 25, 5.0]),
            "eta": np.zeros(7)}
    assert prompt_leptons(flat, 20.0, 2.4).tolist() == [False, False, True, False, False, False, False]


def test_events_whose_leptons_fail_the_selection_get_no_jets(hard):
    batch, library, charge_of = hard
    overlay = pileup.draw_overlay(len(batch), pileup.PileupConfig(mu=2.0, sigma_z_mm=56.0), library,
                                  np.random.default_rng(1))
    particles, flat, counts = batch_particles(batch, charge_of, overlay)
    one_lepton = load_selection("madrazo2017")
    events = reconstruct_events(particles, flat, counts, DetectorConfig(), np.random.default_rng(1), overlay,
                                one_lepton)
    every = reconstruct_events(particles, flat, counts, DetectorConfig(), np.random.default_rng(1), overlay)
    n_lep = ak.num(events.electrons) + ak.num(events.muons)
    assert ak.any(ak.num(every.jets) > 0) and ak.all(ak.num(events.jets)[n_lep == 0] == 0)
    nobody = dataclasses.replace(one_lepton, n_leptons_min=5, n_leptons_max=-1)
    none = reconstruct_events(particles, flat, counts, DetectorConfig(), np.random.default_rng(1), overlay, nobody)
    assert len(none) == len(batch) and ak.sum(ak.num(none.jets)) == 0


def test_the_demo_passes_its_pileup_to_generate_and_records_it_only_when_set(tmp_path, capsys):
    from engine.commands.demo import data_steps

    assert all("--pileup" not in argv for argv in data_steps(tmp_path, 10, 1, 1)["generate"])
    assert all(argv[-2:] == ["--pileup", "9.0"] for argv in data_steps(tmp_path, 10, 1, 1, 9.0)["generate"])
    assert main(["demo", "--out", str(tmp_path / "demo"), "--pileup", "-2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --pileup: must be a mean number of interactions >= 0, got -2"
    assert not (tmp_path / "demo").exists()
