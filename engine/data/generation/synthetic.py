"""Small seeded synthetic event sets in the canonical Parquet layout, for tests and benchmarks.

The physics is not simulated: multiplicities and spectra only look like the real processes
(ttbar: ~1 lepton + 4-6 jets, W+jets: 1 lepton + 1-3 jets, Drell-Yan: 1-2 leptons + 0-2 jets;
large-radius jets with 20-80 constituents, a soft-drop mass of 0.2-1 times the jet mass and a
parton label: 6 for top, one of 1-5 or 21 for QCD), so that sizes and speeds measured on them are
representative. Same seed -> same arrays.
"""
from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np

from engine.data.canonical import parquet_io, schema

# process: (leptons low, high), (jets low, high), b-tag fraction of jets
EVENT_PROCESSES = {"ttbar": ((1, 1), (4, 6), 0.35), "wjets": ((1, 1), (1, 3), 0.05),
                   "dy": ((1, 2), (0, 2), 0.03)}
FATJET_PROCESSES = {"qcd": (20, 60), "top": (40, 80)}
QCD_PARTONS = np.array([1, 2, 3, 4, 5, 21])
PIDS = np.array([211, -211, 22, 130, 321, -321, 2212, -2212, 11, -11, 13, -13, 2112, 310])


def _objects(rng: np.random.Generator, counts: np.ndarray, pt_scale: float) -> dict:
    total = int(counts.sum())
    return {"pt": (20.0 + rng.exponential(pt_scale, total)).astype(np.float32),
            "eta": rng.uniform(-2.4, 2.4, total).astype(np.float32),
            "phi": rng.uniform(-np.pi, np.pi, total).astype(np.float32)}


def _jagged(counts: np.ndarray, fields: dict) -> ak.Array:
    return ak.unflatten(ak.zip(fields, depth_limit=1), counts)


def synthetic_events(process: str, n: int, seed: int) -> ak.Array:
    """`n` event records of `process` (a key of EVENT_PROCESSES) in the generate/convert layout."""
    (lep_lo, lep_hi), (jet_lo, jet_hi), b_frac = EVENT_PROCESSES[process]
    rng = np.random.default_rng([seed, list(EVENT_PROCESSES).index(process)])
    n_lep = rng.integers(lep_lo, lep_hi + 1, n)
    is_mu = rng.random(n) < 0.5
    n_el, n_mu = np.where(is_mu, 0, n_lep), np.where(is_mu, n_lep, 0)
    n_jet = rng.integers(jet_lo, jet_hi + 1, n)
    leptons = {}
    for name, counts, mass in (("electrons", n_el, 0.000511), ("muons", n_mu, 0.1057)):
        fields = _objects(rng, counts, 30.0)
        fields["mass"] = np.full(counts.sum(), mass, np.float32)
        fields["charge"] = rng.choice(np.array([-1, 1], np.int8), counts.sum())
        leptons[name] = _jagged(counts, fields)
    jets = _objects(rng, n_jet, 50.0)
    jets["mass"] = (jets["pt"] * rng.uniform(0.05, 0.2, n_jet.sum())).astype(np.float32)
    jets["btagged"] = rng.random(n_jet.sum()) < b_frac
    jets["btag"] = np.where(jets["btagged"], rng.uniform(0.5, 1.0, n_jet.sum()),
                            rng.uniform(0.0, 0.5, n_jet.sum())).astype(np.float32)
    return ak.zip({"weight": np.ones(n, np.float32), "run": np.ones(n, np.int64),
                   "lumi": rng.integers(1, 100, n), "event": np.arange(n, dtype=np.int64) + 1,
                   "met_pt": rng.exponential(40.0, n).astype(np.float32),
                   "met_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
                   "electrons": leptons["electrons"], "muons": leptons["muons"],
                   "jets": _jagged(n_jet, jets)}, depth_limit=1)


def synthetic_fatjets(process: str, n: int, seed: int) -> ak.Array:
    """`n` large-radius-jet records of `process` (a key of FATJET_PROCESSES)."""
    lo, hi = FATJET_PROCESSES[process]
    rng = np.random.default_rng([seed, 100 + list(FATJET_PROCESSES).index(process)])
    counts = rng.integers(lo, hi + 1, n)
    axis_eta, axis_phi = rng.uniform(-2.0, 2.0, n), rng.uniform(-np.pi, np.pi, n)
    total = int(counts.sum())
    eta = np.repeat(axis_eta, counts) + rng.normal(0, 0.3, total)
    phi = np.repeat(axis_phi, counts) + rng.normal(0, 0.3, total)
    phi = (phi + np.pi) % (2 * np.pi) - np.pi
    pid = rng.choice(PIDS, total)
    charge = np.where(np.isin(pid, [211, 321, 2212, -11, -13]), 1,
                      np.where(np.isin(pid, [-211, -321, -2212, 11, 13]), -1, 0)).astype(np.int8)
    const = {"pt": rng.exponential(8.0, total).astype(np.float32) + 0.5,
             "eta": eta.astype(np.float32), "phi": phi.astype(np.float32),
             "charge": charge, "pid": pid.astype(np.int32)}
    fat = {"pt": rng.uniform(300, 600, n).astype(np.float32),
           "eta": axis_eta.astype(np.float32), "phi": axis_phi.astype(np.float32),
           "mass": rng.uniform(20, 200, n).astype(np.float32)}
    fat["msoftdrop"] = (fat["mass"] * rng.uniform(0.2, 1.0, n)).astype(np.float32)
    fat["parton"] = (np.full(n, 6) if process == "top" else rng.choice(QCD_PARTONS, n)).astype(np.int32)
    return ak.zip({"weight": np.ones(n, np.float32), "run": np.ones(n, np.int64),
                   "lumi": np.ones(n, np.int64), "event": np.arange(n, dtype=np.int64) + 1,
                   "fatjet": ak.zip(fat), "constituents": _jagged(counts, const)}, depth_limit=1)


def write_synthetic(folder: str | Path, kind: str, n_per_class: int, seed: int = 0) -> list[Path]:
    """Write one canonical Parquet file per class into `folder`; returns the paths."""
    processes = EVENT_PROCESSES if kind == "events" else FATJET_PROCESSES
    build = synthetic_events if kind == "events" else synthetic_fatjets
    to_table = schema.events_table if kind == "events" else schema.fatjets_table
    class_names = sorted(processes)
    paths = []
    for process in processes:
        table = to_table(build(process, n_per_class, seed), process, class_names)
        path = Path(folder) / f"{process}.parquet"
        parquet_io.write_table(path, table, kind, class_names, {"generator": "synthetic", "seed": seed})
        paths.append(path)
    return paths
