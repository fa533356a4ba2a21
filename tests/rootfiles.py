"""Small, seeded input files in the formats `python -m engine convert` reads.

Used by the tests and by `benchmarks/convert.py`. Nothing here is a converter: these helpers
only make inputs, with the layouts real files have as far as uproot can write them.

- NanoAOD-style: tree `Events`; counters `nMuon`, `nElectron`, `nJet`; leaves `Muon_pt`, ...,
  `Jet_btagDeepFlavB` (or another b-tag branch), flat `MET_pt`, `MET_phi`, `run`,
  `luminosityBlock`, `event`, `genWeight`. Exactly what uproot writes for a record collection.
- Delphes-style: tree `Delphes`; leaves named like `Electron.PT` with counters `Electron_size`
  (the names real Delphes files have; uproot cannot write the TClonesArray parent branch), or,
  with `naming="underscore"`, the `nElectron` / `Electron_PT` layout uproot writes by default.
- RNTuple (`write_rntuple`): the same branch dicts as an RNTuple, collections as fields holding a
  list of records per event (`Muon.pt`, CMS's RNTuple NanoAOD layout), optionally with ROOT's page
  checksums.
- 2017-study JSON: an object keyed by event number, each event with electron / muon / jet
  lists and met, met_phi, run, lumi, ... (see ../shared/reference/SEEDS.md, section 1).

A collection is given as an awkward jagged record array; flat branches as numpy arrays.
`corrupt` damages any file's bytes in one seeded way, for the fuzz tests.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterable, Iterator

import awkward as ak
import numpy as np
import uproot
import xxhash

MUON_MASS_GEV = 0.1056584


def _counts(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    return rng.poisson(mean, n).astype(np.int64)


def _kinematics(rng: np.random.Generator, counts: np.ndarray, pt_min: float, pt_scale: float,
                pt_sorted: bool) -> dict[str, np.ndarray]:
    """Flat pt / eta / phi for `counts.sum()` objects; pt sorted per event if asked."""
    total = int(counts.sum())
    pt = (pt_min + rng.exponential(pt_scale, total)).astype(np.float32)
    if pt_sorted:
        owner = np.repeat(np.arange(len(counts)), counts)
        pt = pt[np.lexsort((-pt, owner))]
    return {"pt": pt, "eta": rng.uniform(-3.0, 3.0, total).astype(np.float32),
            "phi": rng.uniform(-math.pi, math.pi, total).astype(np.float32)}


def _jagged(counts: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    return ak.unflatten(ak.zip(fields, depth_limit=1), counts)


def _charge(rng: np.random.Generator, total: int) -> np.ndarray:
    return rng.choice(np.array([-1, 1], dtype=np.int32), total)


def nanoaod_branches(n_events: int, seed: int, *, first_event: int = 1,
                     btag_branch: str = "Jet_btagDeepFlavB", pt_sorted: bool = False,
                     means: tuple[float, float, float] = (0.8, 0.6, 4.0)) -> dict:
    """NanoAOD-style branches for `n_events` events: collections Muon, Electron, Jet + flat branches.

    `means` are the Poisson means of the muon, electron and jet counts.
    """
    rng = np.random.default_rng(seed)
    n_mu, n_el, n_jet = (_counts(rng, n_events, m) for m in means)
    mu = _kinematics(rng, n_mu, 5.0, 30.0, pt_sorted)
    mu.update(mass=np.full(len(mu["pt"]), MUON_MASS_GEV, np.float32), charge=_charge(rng, len(mu["pt"])),
              tightId=rng.random(len(mu["pt"])) < 0.8,
              pfRelIso04_all=rng.exponential(0.1, len(mu["pt"])).astype(np.float32))
    el = _kinematics(rng, n_el, 5.0, 30.0, pt_sorted)
    el.update(mass=rng.uniform(0.0, 0.002, len(el["pt"])).astype(np.float32),
              charge=_charge(rng, len(el["pt"])),
              cutBased=rng.integers(0, 5, len(el["pt"])).astype(np.int32),
              pfRelIso03_all=rng.exponential(0.1, len(el["pt"])).astype(np.float32))
    jet = _kinematics(rng, n_jet, 15.0, 40.0, pt_sorted)
    jet.update(mass=rng.exponential(10.0, len(jet["pt"])).astype(np.float32),
               jetId=rng.choice(np.array([0, 2, 6, 6, 6, 6], np.int32), len(jet["pt"])),
               **{btag_branch[len("Jet_"):]: rng.random(len(jet["pt"])).astype(np.float32)})
    return {
        "run": np.full(n_events, 1, np.uint32),
        "luminosityBlock": (1 + np.arange(first_event, first_event + n_events) // 1000).astype(np.uint32),
        "event": np.arange(first_event, first_event + n_events, dtype=np.uint64),
        "genWeight": rng.choice(np.array([-1.5, 1.5], np.float32), n_events),
        "MET_pt": rng.exponential(40.0, n_events).astype(np.float32),
        "MET_phi": rng.uniform(-math.pi, math.pi, n_events).astype(np.float32),
        "Muon": _jagged(n_mu, mu), "Electron": _jagged(n_el, el), "Jet": _jagged(n_jet, jet),
    }


def nanoaod_chunks(n_events: int, seed: int, chunk_events: int = 100_000, **kwargs) -> Iterator[dict]:
    """`nanoaod_branches` in chunks (seed derived per chunk), for files too big to build at once."""
    for i, start in enumerate(range(0, n_events, chunk_events)):
        n = min(chunk_events, n_events - start)
        yield nanoaod_branches(n, seed * 1_000_003 + i, first_event=1 + start, **kwargs)


def delphes_branches(n_events: int, seed: int) -> dict:
    """Delphes-style collections Electron, Muon, Jet, MissingET (one entry), Event (one entry)."""
    rng = np.random.default_rng(seed)
    n_el, n_mu, n_jet = (_counts(rng, n_events, m) for m in (0.6, 0.8, 4.0))
    el = _kinematics(rng, n_el, 10.0, 30.0, False)
    mu = _kinematics(rng, n_mu, 10.0, 30.0, False)
    jet = _kinematics(rng, n_jet, 20.0, 40.0, False)
    ones = np.ones(n_events, np.int64)
    return {
        "Event": _jagged(ones, {"Number": np.arange(1, n_events + 1, dtype=np.int64),
                                "Weight": rng.uniform(0.5, 2.0, n_events).astype(np.float32)}),
        "Electron": _jagged(n_el, {"PT": el["pt"], "Eta": el["eta"], "Phi": el["phi"],
                                   "Charge": _charge(rng, len(el["pt"])),
                                   "EhadOverEem": rng.random(len(el["pt"])).astype(np.float32)}),
        "Muon": _jagged(n_mu, {"PT": mu["pt"], "Eta": mu["eta"], "Phi": mu["phi"],
                               "Charge": _charge(rng, len(mu["pt"]))}),
        "Jet": _jagged(n_jet, {"PT": jet["pt"], "Eta": jet["eta"], "Phi": jet["phi"],
                               "Mass": rng.exponential(10.0, len(jet["pt"])).astype(np.float32),
                               "BTag": (rng.random(len(jet["pt"])) < 0.3).astype(np.uint32),
                               "Flavor": rng.integers(0, 6, len(jet["pt"])).astype(np.int32)}),
        "MissingET": _jagged(ones, {"MET": rng.exponential(40.0, n_events).astype(np.float32),
                                    "Phi": rng.uniform(-math.pi, math.pi, n_events).astype(np.float32)}),
    }


def write_root(path: str | Path, tree_name: str, chunks: Iterable[dict], *,
               naming: str = "nanoaod", compression=None) -> Path:
    """Write branch dicts (one `extend`, so one basket per branch, per chunk) into a new TTree.

    naming: "nanoaod" / "underscore" -> `nX` counters and `X_field` leaves (uproot's default);
    "dotted" -> Delphes names, `X_size` counters and `X.Field` leaves.
    compression: an uproot compression (default uproot's, ZLIB level 1).
    """
    path = Path(path)
    names = {"dotted": dict(counter_name=lambda c: f"{c}_size", field_name=_dotted)}
    options = {} if compression is None else {"compression": compression}
    with uproot.recreate(path, **options) as out:
        tree = None
        for chunk in chunks:
            if tree is None:
                types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in chunk.items()}
                tree = out.mktree(tree_name, types, **names.get(naming, {}))
            tree.extend(chunk)
    return path


def _dotted(outer: str, inner: str) -> str:
    return inner if outer == "" else f"{outer}.{inner}"


def json_events(n_events: int, seed: int) -> dict[str, dict]:
    """2017-study JSON events keyed by event number (strings, as JSON object keys are)."""
    rng = np.random.default_rng(seed)
    events = {}
    for number in range(1, n_events + 1):
        events[str(number)] = {
            "electron": [_json_lepton(rng) for _ in range(rng.poisson(0.6))],
            "muon": [_json_lepton(rng) for _ in range(rng.poisson(0.8))],
            "jet": [_json_jet(rng) for _ in range(rng.poisson(4.0))],
            "met": float(rng.exponential(40.0)), "met_phi": float(rng.uniform(-math.pi, math.pi)),
            "sumet": float(rng.exponential(300.0)), "xsec": 1.0, "isMC": True,
            "run": 1, "lumi": 1 + number // 100,
        }
        ev = events[str(number)]
        ev.update(nummu=len(ev["muon"]), numel=len(ev["electron"]), njet=len(ev["jet"]))
    return events


def _json_lepton(rng: np.random.Generator) -> dict:
    pt, eta, phi = float(10 + rng.exponential(30.0)), float(rng.uniform(-2.5, 2.5)), float(rng.uniform(-3, 3))
    return {"pt": pt, "px": pt * math.cos(phi), "py": pt * math.sin(phi), "pz": pt * math.sinh(eta),
            "eta": eta, "phi": phi, "tightID": bool(rng.random() < 0.8), "tightIso": bool(rng.random() < 0.8)}


def _json_jet(rng: np.random.Generator) -> dict:
    csv = float(rng.random()) if rng.random() < 0.7 else -100.0
    return {"pt": float(20 + rng.exponential(40.0)), "eta": float(rng.uniform(-3, 3)),
            "phi": float(rng.uniform(-3, 3)), "CSV": csv, "tightID": bool(rng.random() < 0.9)}


def write_json(path: str | Path, events: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(events))
    return path


def corrupt(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One seeded corruption of `data`: (description, corrupted bytes)."""
    size = len(data)
    how = rng.choice(["flip", "flip_footer", "truncate", "delete", "insert", "overwrite", "zeros"])
    b = bytearray(data)
    if how in ("flip", "flip_footer"):
        low = max(0, size - 600) if how == "flip_footer" else 0
        positions = rng.integers(low, size, rng.integers(1, 4))
        for pos in positions:
            b[pos] ^= 1 << int(rng.integers(0, 8))
        return f"{how} at {positions.tolist()}", bytes(b)
    if how == "truncate":
        keep = int(rng.integers(0, size))
        return f"truncate to {keep}", bytes(b[:keep])
    start = int(rng.integers(0, size))
    length = int(rng.integers(1, 65))
    if how == "delete":
        del b[start:start + length]
    elif how == "insert":
        b[start:start] = rng.bytes(length)
    else:
        new = rng.bytes(length) if how == "overwrite" else bytes(length)
        b[start:start + length] = new[:len(b[start:start + length])]
    return f"{how} {length} bytes at {start}", bytes(b)


def write_rntuple(path: str | Path, name: str, chunks: Iterable[dict], *, compression=None,
                  page_checksums: bool = False) -> Path:
    """Write branch dicts (one `extend`, so one cluster, per chunk) into a new RNTuple.

    A collection becomes one field holding a list of records per event (`Muon` with subfields
    `pt`, `eta`, ...), the layout of CMS's RNTuple NanoAOD output (and, for Delphes collections,
    fields `Electron.PT`, ... named as Delphes's leaves); flat arrays become top-level fields
    (`MET_pt`, `run`). compression: an uproot compression (default uproot's, ZLIB level 1).
    page_checksums: follow every page with its xxHash3-64, flagged in the page list, as ROOT
    writes pages (uproot writes none).
    """
    path = Path(path)
    options = {} if compression is None else {"compression": compression}
    with uproot.recreate(path, **options) as out:
        ntuple = None
        for chunk in chunks:
            data = ak.zip(dict(chunk), depth_limit=1)
            if ntuple is None:
                ntuple = out.mkrntuple(name, data.layout.form)
            with _page_checksums(page_checksums):
                ntuple.extend(data)
    return path


@contextlib.contextmanager
def _page_checksums(enabled: bool) -> Iterator[None]:
    """While extending an RNTuple: each page's bytes followed by their xxHash3-64 (little endian,
    outside the page's locator) and a negative element count in the page list, ROOT's convention.
    Patches uproot's RNTuple writer (uproot 5.7), which has no such option."""
    if not enabled:
        yield
        return
    cascade = uproot.writing._cascadentuple
    add_rblob, serialize = cascade.NTuple.add_rblob, cascade.NTuple_PageDescription.serialize

    def add_checksummed(self, sink, raw_data, uncompressed_bytes):
        raw = bytes(raw_data)
        return add_rblob(self, sink, raw + xxhash.xxh3_64_intdigest(raw).to_bytes(8, "little"),
                         uncompressed_bytes)

    def serialize_flagged(self):
        return b"".join([cascade._rntuple_page_num_elements_format.pack(-self.num_entries),
                         self.locator.serialize()])

    cascade.NTuple.add_rblob, cascade.NTuple_PageDescription.serialize = add_checksummed, serialize_flagged
    try:
        yield
    finally:
        cascade.NTuple.add_rblob, cascade.NTuple_PageDescription.serialize = add_rblob, serialize
