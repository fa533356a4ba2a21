"""The padded object layout shared by the loader, the renderers and the set models.

An event becomes a fixed-size list of up to `cap` objects, in this order: electrons, muons,
jets (each by pt descending), then MET as one object at eta = 0. Objects beyond the cap are
dropped (the count is reported by `pad_events`); MET is always kept as the last slot used.
The type codes, feature columns and caps are defined in engine/contracts.py and re-exported here.

Batch arrays (B events, N = cap slots):
  types    (B, N) int8     OBJECT_TYPES code, 0 for padding
  features (B, N, F) float32  columns FEATURES: pt [GeV], eta, phi [rad], mass [GeV], btag, charge
  counts   (B,) int32      number of real objects (MET included)
  labels   (B,) int64
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.contracts import (BJET, CONSTITUENT_FEATURES, DEFAULT_CAP, DEFAULT_CONSTITUENT_CAP, ELECTRON,
                              F_BTAG, F_CHARGE, F_ETA, F_MASS, F_PHI, F_PT, FATJET_FEATURES, FEATURES, JET,
                              MET, MUON, OBJECT_TYPES, PAD)

__all__ = ["PAD", "ELECTRON", "MUON", "JET", "BJET", "MET", "OBJECT_TYPES", "FEATURES", "F_PT", "F_ETA",
           "F_PHI", "F_MASS", "F_BTAG", "F_CHARGE", "DEFAULT_CAP", "CONSTITUENT_FEATURES", "FATJET_FEATURES",
           "DEFAULT_CONSTITUENT_CAP", "EVENT_COLUMNS", "FATJET_COLUMNS", "ranks_within", "list_fields",
           "pad_events", "pad_fatjets"]

EVENT_COLUMNS = ["label", "met_pt", "met_phi", "electrons", "muons", "jets"]


def ranks_within(counts: np.ndarray) -> np.ndarray:
    """Index of each flat object within its event, for jagged `counts` (E,) -> (sum(counts),)."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def list_fields(table: pa.Table, name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-event counts (E,) int64 and flat numpy arrays of each field of list<struct> column `name`."""
    column = table.column(name).combine_chunks()
    offsets = column.offsets.to_numpy()
    flat = pc.list_flatten(column)
    fields = {flat.type.field(i).name: flat.field(i).to_numpy(zero_copy_only=False)
              for i in range(flat.type.num_fields)}
    return np.diff(offsets - offsets[0]).astype(np.int64), fields


def pad_events(table: pa.Table, cap: int = DEFAULT_CAP) -> dict[str, np.ndarray]:
    """Reference padding of a canonical event table (vectorised, no loop over events).

    Returns types, features, counts, labels (see module docstring) and `truncated`, the
    number of objects dropped because an event had more than `cap` (MET included).
    """
    n = table.num_rows
    types = np.zeros((n, cap), np.int8)
    feats = np.zeros((n, cap, len(FEATURES)), np.float32)
    filled = np.zeros(n, np.int64)
    truncated = 0
    for name, code in (("electrons", ELECTRON), ("muons", MUON), ("jets", JET)):
        counts, fields = list_fields(table, name)
        room = np.maximum(cap - 1 - filled, 0)          # keep one slot for MET
        take = np.minimum(counts, room)
        truncated += int((counts - take).sum())
        event = np.repeat(np.arange(n), counts)
        rank = ranks_within(counts)
        keep = rank < take[event]
        ev, slot = event[keep], (filled[event] + rank)[keep]
        types[ev, slot] = code
        if name == "jets":
            types[ev, slot] = np.where(fields["btagged"][keep], BJET, JET)
        for f, key in enumerate(FEATURES):
            if key in fields:
                feats[ev, slot, f] = fields[key][keep]
        filled += take
    rows = np.arange(n)
    types[rows, filled] = MET
    feats[rows, filled, F_PT] = table.column("met_pt").to_numpy()
    feats[rows, filled, F_PHI] = table.column("met_phi").to_numpy()
    return {"types": types, "features": feats, "counts": (filled + 1).astype(np.int32),
            "labels": table.column("label").to_numpy().astype(np.int64), "truncated": truncated}


FATJET_COLUMNS = ["label", "fatjet", "constituents"]


def pad_fatjets(table: pa.Table, cap: int = DEFAULT_CONSTITUENT_CAP) -> dict[str, np.ndarray]:
    """Reference padding of a canonical large-radius-jet table.

    Returns constituents (B, M, 5) float32 [pt, eta, phi, charge, pid] (absolute eta/phi, highest
    pt first), counts (B,) int32, fatjet (B, 4) float32 [pt, eta, phi, mass], msoftdrop (B,) float32
    (the soft-drop mass; NaN where not recorded), parton (B,) int32 (|PDG id| of the matched
    hard-process particle, 0 for none), labels (B,) int64, and `truncated`, the number of
    constituents beyond the cap.
    """
    n = table.num_rows
    counts, fields = list_fields(table, "constituents")
    take = np.minimum(counts, cap)
    event = np.repeat(np.arange(n), counts)
    rank = ranks_within(counts)
    keep = rank < cap
    out = np.zeros((n, cap, len(CONSTITUENT_FEATURES)), np.float32)
    for f, key in enumerate(CONSTITUENT_FEATURES):
        out[event[keep], rank[keep], f] = fields[key][keep]
    fat = table.column("fatjet").combine_chunks()
    fatjet = np.stack([fat.field(k).to_numpy(zero_copy_only=False) for k in FATJET_FEATURES], axis=1)
    return {"constituents": out, "counts": take.astype(np.int32), "fatjet": fatjet.astype(np.float32),
            "msoftdrop": fat.field("msoftdrop").to_numpy(zero_copy_only=False).astype(np.float32),
            "parton": fat.field("parton").to_numpy(zero_copy_only=False).astype(np.int32),
            "labels": table.column("label").to_numpy().astype(np.int64),
            "truncated": int((counts - take).sum())}
