"""Jagged arrays as (offsets, flat numpy arrays) and back, without a Python loop per event.

The ROOT readers and the converter's selection work on flat per-object numpy arrays with the
event offsets beside them (n_events + 1,), and build awkward jagged records from them again.
"""
from __future__ import annotations

import awkward as ak
import numpy as np


def list_parts(array: ak.Array) -> tuple[np.ndarray, ak.contents.Content]:
    """(offsets starting at 0, content) of a jagged array, without copying when possible."""
    layout = ak.to_layout(array)
    if not isinstance(layout, ak.contents.ListOffsetArray):
        layout = layout.to_ListOffsetArray64(True)
    offsets = np.asarray(layout.offsets.data, dtype=np.int64)
    return offsets - offsets[0], layout.content[offsets[0]:offsets[-1]]


def record_parts(objs: ak.Array) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(offsets, {field: flat numpy array}) of a jagged record array such as `events.jets`."""
    offsets, content = list_parts(objs)
    return offsets, {name: ak.to_numpy(content[name]) for name in content.fields}


def jagged_record(offsets: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    """A jagged record array from event offsets (n + 1,) and flat per-object arrays (offsets[-1],)."""
    contents = [ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in fields.values()]
    record = ak.contents.RecordArray(contents, list(fields), length=int(offsets[-1]))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def keep_objects(offsets: np.ndarray, fields: dict[str, np.ndarray], keep: np.ndarray) -> ak.Array:
    """`jagged_record` of only the objects where the flat boolean `keep` is True."""
    kept = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    index = np.flatnonzero(keep)  # one integer index, reused by every field
    return jagged_record(kept[offsets], {name: v.take(index) for name, v in fields.items()})


def first_per_event(offsets: np.ndarray, flat: np.ndarray, default: float = 0.0) -> np.ndarray:
    """The first entry of each event's list (Delphes MissingET, Event), `default` where empty."""
    counts = np.diff(offsets)
    if (counts == 1).all():
        return flat
    out = np.full(len(counts), default, dtype=flat.dtype)
    out[counts > 0] = flat[offsets[:-1][counts > 0]]
    return out
