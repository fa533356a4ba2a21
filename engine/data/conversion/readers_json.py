"""The 2017 study's JSON events -> awkward event records.

The file (made by the study's CMSSW analyzer, see ../shared/reference/SEEDS.md, section 1) is one
JSON object keyed by event number; each event holds `electron`, `muon` and `jet` lists and the
fields met, met_phi, run, lumi (and sumet, nummu, numel, njet, xsec, isMC, which are not used).
  leptons  pt, eta, phi, tightID, tightIso (px, py, pz unused); charge if present, else 0;
           mass from the PDG. good = tightID and tightIso (relative isolation < 0.10).
  jets     pt, eta, phi, CSV, tightID; mass if present, else 0. CSV = -100 means no b-tag match
           and becomes btag 0; btagged = CSV > 0.679 (medium working point). good = tightID.
  event    keyed by (run, lumi, event): event is the object key; weight 1.

The file, local or behind a URL (engine.data.conversion.locations), is read whole (JSON cannot be
streamed by event without a streaming parser), so memory grows with the file; the rest of the
pipeline then works in chunks of `step_size` events. Converting the parsed objects to arrays is
done by awkward's ArrayBuilder (`ak.from_iter`).
"""
from __future__ import annotations

import json
from typing import Iterator

import awkward as ak
import numpy as np

from engine.data.conversion import locations
from engine.data.conversion.locations import Source, location
from engine.data.conversion.readers_root import ELECTRON_MASS_GEV, MUON_MASS_GEV
from engine.errors import InputError

CSV_MEDIUM_WP = 0.679
LEPTON_REQUIRED = ("pt", "eta", "phi")
JET_REQUIRED = ("pt", "eta", "phi", "CSV")
EVENT_REQUIRED = ("met", "met_phi", "run", "lumi")


class JsonReader:
    """Reads one 2017-study JSON file; parses it on first use of `num_events` or `chunks`."""

    format = "json"
    tree_name = None

    def __init__(self, path: str | Source, step_size: int):
        self.path = location(path)
        self.step_size = step_size
        head = locations.head(self.path, 64).lstrip()
        if not head:
            raise InputError(self.path, "empty file")
        if not head.startswith(b"{"):
            raise InputError(self.path, "not a 2017-study JSON file (expected an object keyed by event number)")
        self._events: ak.Array | None = None

    @property
    def num_events(self) -> int:
        return len(self._parsed())

    def _parsed(self) -> ak.Array:
        if self._events is None:
            self._events = _to_events(self.path, _load(self.path))
        return self._events

    def chunks(self) -> Iterator[ak.Array]:
        events = self._parsed()
        for start in range(0, len(events), self.step_size):
            yield events[start:start + self.step_size]

    def close(self) -> None:
        self._events = None

    def provenance(self) -> dict:
        return {"tree": None, "btag_branch": "CSV", "btag_medium_wp": CSV_MEDIUM_WP,
                "lepton_id": "tightID and tightIso", "jet_id": "tightID"}


def _load(path: Source) -> dict:
    text = locations.content(path)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(path, f"not valid JSON{where}") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply to be events") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object keyed by event number")
    return data


def _to_events(path: Source, data: dict) -> ak.Array:
    """Event records (see engine.data.conversion.readers_root) from the parsed JSON object."""
    try:
        numbers = np.array(list(data.keys()), dtype=np.int64)
    except (ValueError, OverflowError):
        raise InputError(path, "event keys must be event numbers") from None
    if not data:
        raw = ak.Array([{k: 0.0 for k in EVENT_REQUIRED}])[:0]
    else:
        try:
            raw = ak.from_iter(list(data.values()))
        except (RuntimeError, OverflowError, ValueError, TypeError):
            raise InputError(path, "events hold values that are not 64-bit numbers, lists or objects "
                                   "(an integer beyond 64 bits?)") from None
    if raw.fields == []:
        raise InputError(path, "events must be JSON objects")
    header = {k: _column(path, raw, k, "event") for k in EVENT_REQUIRED}
    return ak.zip({
        "weight": np.ones(len(raw), np.float32),
        "run": header["run"], "lumi": header["lumi"], "event": numbers,
        "met_pt": header["met"], "met_phi": header["met_phi"],
        "electrons": _leptons(path, raw, "electron", ELECTRON_MASS_GEV),
        "muons": _leptons(path, raw, "muon", MUON_MASS_GEV),
        "jets": _jets(path, raw),
    }, depth_limit=1)


def _column(path: Source, records: ak.Array, key: str, what: str, default: float | None = None) -> np.ndarray:
    """One numeric field of `records` as a flat numpy array; missing -> default or InputError."""
    if key not in records.fields:
        if default is None and len(records):
            raise InputError(path, f"{what} field '{key}' is missing")
        return np.full(len(records), 0.0 if default is None else default)
    values = records[key]
    if isinstance(values.type.content, ak.types.OptionType):
        if default is None:
            raise InputError(path, f"{what} field '{key}' is missing in some {what}s")
        values = ak.fill_none(values, default)
    try:
        out = ak.to_numpy(values)
    except (ValueError, TypeError):
        raise InputError(path, f"{what} field '{key}' must be a number") from None
    if out.dtype.kind not in "biuf":
        raise InputError(path, f"{what} field '{key}' must be a number")
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise InputError(path, f"{int((~np.isfinite(out)).sum())} NaN or infinite value(s) "
                               f"in {what} field '{key}'")
    return out


def _collection(path: Source, raw: ak.Array, key: str) -> tuple[np.ndarray, ak.Array]:
    """(counts per event, flat records) of the list `key` of every event; absent -> empty."""
    if key not in raw.fields:
        return np.zeros(len(raw), np.int64), ak.Array([{}])[:0]
    lists = raw[key]
    if isinstance(lists.type.content, ak.types.OptionType):
        lists = ak.fill_none(lists, [], axis=0)
    try:
        return ak.to_numpy(ak.num(lists, axis=1)), ak.flatten(lists, axis=1)
    except (ValueError, TypeError, np.exceptions.AxisError):
        raise InputError(path, f"event field '{key}' must be a list of objects") from None


def _flag(path: Source, objs: ak.Array, key: str, what: str) -> np.ndarray:
    return _column(path, objs, key, what).astype(bool)


def _leptons(path: Source, raw: ak.Array, key: str, mass_gev: float) -> ak.Array:
    counts, objs = _collection(path, raw, key)
    fields = {f: _column(path, objs, f, key) for f in LEPTON_REQUIRED}
    fields["mass"] = np.full(len(objs), mass_gev, np.float32)
    fields["charge"] = _column(path, objs, "charge", key, default=0)
    fields["good"] = _flag(path, objs, "tightID", key) & _flag(path, objs, "tightIso", key)
    return ak.unflatten(ak.zip(fields, depth_limit=1), counts)


def _jets(path: Source, raw: ak.Array) -> ak.Array:
    counts, objs = _collection(path, raw, "jet")
    fields = {f: _column(path, objs, f, "jet") for f in ("pt", "eta", "phi")}
    fields["mass"] = _column(path, objs, "mass", "jet", default=0.0)
    csv = _column(path, objs, "CSV", "jet")
    fields["btag"] = np.maximum(csv, 0.0)
    fields["btagged"] = csv > CSV_MEDIUM_WP
    fields["good"] = _flag(path, objs, "tightID", "jet")
    return ak.unflatten(ak.zip(fields, depth_limit=1), counts)
