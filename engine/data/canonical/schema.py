"""The canonical on-disk event formats: one Parquet row per event, or per large-radius jet.

Everything that writes Parquet goes through `events_table` / `fatjets_table`, so every file has
exactly these Arrow types, collections sorted by pt descending, finite values, and file metadata
under the key `engine` (JSON: schema version, kind, class names, provenance). A value that does
not fit its column's type (a charge of 1000 in int8, a fractional pid, 1e39 in float32) is a
`ValueRangeError`, never wrapped or rounded.

Units: GeV for momenta and masses, radians for angles.
`label` is the index of `process` in the file's `class_names`.

Schema versions: 2 added the fat jet's truth and grooming fields `msoftdrop` (soft-drop mass, GeV)
and `parton` (|PDG id| of the matched hard-process particle, 0 for none). Files of version 1 are
still read: `upgrade` gives their jets msoftdrop = NaN (not recorded) and parton = 0.
Version 2 also added the event columns `n_interactions` (pileup interactions overlaid) and
`n_vertices` (reconstructed vertices), which only generation with pileup writes; event files
without pileup have the columns they always had.
"""
from __future__ import annotations

import json
from typing import Any

import awkward as ak
import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2
READ_VERSIONS = (1, 2)
"""Schema versions the readers accept (older ones are upgraded on read, see `upgrade`)."""
METADATA_KEY = b"engine"
ROW_GROUP_ROWS = 65_536

LEPTON_FIELDS = {"pt": pa.float32(), "eta": pa.float32(), "phi": pa.float32(),
                 "mass": pa.float32(), "charge": pa.int8()}
JET_FIELDS = {"pt": pa.float32(), "eta": pa.float32(), "phi": pa.float32(),
              "mass": pa.float32(), "btag": pa.float32(), "btagged": pa.bool_()}
FATJET_FIELDS_V1 = {"pt": pa.float32(), "eta": pa.float32(), "phi": pa.float32(), "mass": pa.float32()}
FATJET_FIELDS = {**FATJET_FIELDS_V1, "msoftdrop": pa.float32(), "parton": pa.int32()}
NOT_RECORDED = {"msoftdrop": np.nan, "parton": 0}
"""What the readers give for the fat-jet fields a version-1 file lacks."""
MAY_BE_NAN = ("fatjet.msoftdrop",)
"""Float columns where NaN means "not recorded" (version-1 files), not a corrupt value."""
CONSTITUENT_FIELDS = {"pt": pa.float32(), "eta": pa.float32(), "phi": pa.float32(),
                      "charge": pa.int8(), "pid": pa.int32()}

COLLECTIONS = {"electrons": LEPTON_FIELDS, "muons": LEPTON_FIELDS, "jets": JET_FIELDS}


class ValueRangeError(ValueError):
    """Values that do not fit the type of their column; the message names the column."""


def _struct(fields: dict[str, pa.DataType]) -> pa.StructType:
    return pa.struct([pa.field(name, typ, nullable=False) for name, typ in fields.items()])


def _list_of(fields: dict[str, pa.DataType]) -> pa.ListType:
    return pa.list_(pa.field("item", _struct(fields), nullable=False))


HEADER_FIELDS = [
    pa.field("label", pa.int32(), nullable=False),
    pa.field("process", pa.string(), nullable=False),
    pa.field("weight", pa.float32(), nullable=False),
    pa.field("run", pa.int64(), nullable=False),
    pa.field("lumi", pa.int64(), nullable=False),
    pa.field("event", pa.int64(), nullable=False),
]

EVENT_SCHEMA = pa.schema(HEADER_FIELDS + [
    pa.field("met_pt", pa.float32(), nullable=False),
    pa.field("met_phi", pa.float32(), nullable=False),
] + [pa.field(name, _list_of(fields), nullable=False) for name, fields in COLLECTIONS.items()])


def _fatjet_schema(fatjet_fields: dict[str, pa.DataType]) -> pa.Schema:
    return pa.schema(HEADER_FIELDS + [
        pa.field("fatjet", _struct(fatjet_fields), nullable=False),
        pa.field("constituents", _list_of(CONSTITUENT_FIELDS), nullable=False),
    ])


FATJET_SCHEMA = _fatjet_schema(FATJET_FIELDS)

PILEUP_FIELDS = [
    pa.field("n_interactions", pa.int32(), nullable=False),
    pa.field("n_vertices", pa.int32(), nullable=False),
]
"""Event columns of generation with pileup (schema version 2)."""
EVENT_PILEUP_SCHEMA = pa.schema(list(EVENT_SCHEMA) + PILEUP_FIELDS)

KINDS = {"events": EVENT_SCHEMA, "fatjets": FATJET_SCHEMA}
OLDER = {1: {"fatjets": _fatjet_schema(FATJET_FIELDS_V1)}}
"""Schemas of older versions, where they differ from the current one."""


def schema_for(kind: str, version: int = SCHEMA_VERSION, pileup: bool = False) -> pa.Schema:
    """The Arrow schema of `kind` files of schema `version` (one of READ_VERSIONS); events with
    `pileup` (version 2 on) have the PILEUP_FIELDS too."""
    if pileup and kind == "events" and version >= 2:
        return EVENT_PILEUP_SCHEMA
    return OLDER.get(version, {}).get(kind, KINDS[kind])


def upgrade(data: pa.Table | pa.RecordBatch, kind: str, version: int) -> pa.Table | pa.RecordBatch:
    """Rows read from a file of schema `version` in the current layout: a version-1 `fatjet`
    column gains msoftdrop = NaN and parton = 0 (NOT_RECORDED). Other data is returned as it is."""
    if version == SCHEMA_VERSION or kind != "fatjets" or "fatjet" not in data.schema.names:
        return data
    index = data.schema.get_field_index("fatjet")
    column = data.column(index)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    upgraded = [_upgrade_fatjets(chunk) for chunk in chunks]
    field = pa.field("fatjet", _struct(FATJET_FIELDS), nullable=False)
    if isinstance(data, pa.Table):
        return data.set_column(index, field, pa.chunked_array(upgraded, type=field.type))
    arrays = [upgraded[0] if i == index else data.column(i) for i in range(data.num_columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=data.schema.set(index, field))


def _upgrade_fatjets(old: pa.StructArray) -> pa.StructArray:
    n = len(old)
    children = [old.field(name) for name in FATJET_FIELDS_V1]
    children += [pa.array(np.full(n, NOT_RECORDED[name], typ.to_pandas_dtype()), type=typ)
                 for name, typ in FATJET_FIELDS.items() if name not in FATJET_FIELDS_V1]
    return pa.StructArray.from_arrays(children, fields=list(_struct(FATJET_FIELDS)))


def accepts(kind: str, version: int, columns: pa.Schema) -> bool:
    """Whether `columns` (without metadata) are those of a `kind` file of schema `version`."""
    return any(columns.equals(schema_for(kind, version, pileup)) for pileup in (False, True))


def make_metadata(kind: str, class_names: list[str], provenance: dict[str, Any]) -> dict[bytes, bytes]:
    """File-level key/value metadata for a Parquet file of `kind` ('events' or 'fatjets')."""
    doc = {"schema_version": SCHEMA_VERSION, "kind": kind, "class_names": list(class_names),
           "provenance": provenance}
    return {METADATA_KEY: json.dumps(doc, sort_keys=True, default=_json_default).encode()}


def parse_metadata(raw: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The `engine` metadata document of a Parquet schema, or None if the file has none."""
    if not raw or METADATA_KEY not in raw:
        return None
    return json.loads(raw[METADATA_KEY])


def sort_by_pt(collection: ak.Array) -> ak.Array:
    """Sort each event's objects by pt, highest first (stable, columnar)."""
    order = ak.argsort(collection.pt, axis=1, ascending=False, stable=True)
    return collection[order]


def events_table(events: ak.Array, process: str, class_names: list[str]) -> pa.Table:
    """Canonical event table from an awkward array of event records.

    `events` has fields weight, run, lumi, event, met_pt, met_phi and the collections
    electrons / muons / jets (records with the fields of LEPTON_FIELDS / JET_FIELDS), and
    optionally n_interactions and n_vertices (then the table has the PILEUP_FIELDS).
    Collections are sorted by pt descending here; `label` and `process` are filled in.
    """
    n = len(events)
    columns = _header_columns(events, process, class_names, n)
    columns["met_pt"] = _flat(events.met_pt, pa.float32(), "met_pt")
    columns["met_phi"] = _flat(events.met_phi, pa.float32(), "met_phi")
    for name, fields in COLLECTIONS.items():
        columns[name] = _list_column(sort_by_pt(events[name]), fields, name)
    pileup = "n_interactions" in events.fields
    if pileup:
        for field in PILEUP_FIELDS:
            columns[field.name] = _flat(events[field.name], field.type, field.name)
    return pa.Table.from_pydict(columns, schema=schema_for("events", pileup=pileup))


def fatjets_table(jets: ak.Array, process: str, class_names: list[str]) -> pa.Table:
    """Canonical large-radius-jet table: fields weight, run, lumi, event, fatjet (with the fields of
    FATJET_FIELDS), constituents."""
    n = len(jets)
    columns = _header_columns(jets, process, class_names, n)
    fat = jets.fatjet
    columns["fatjet"] = pa.StructArray.from_arrays(
        [_flat(fat[name], typ, f"fatjet.{name}") for name, typ in FATJET_FIELDS.items()],
        fields=list(_struct(FATJET_FIELDS)))
    columns["constituents"] = _list_column(sort_by_pt(jets.constituents), CONSTITUENT_FIELDS, "constituents")
    return pa.Table.from_pydict(columns, schema=FATJET_SCHEMA)


def _header_columns(events: ak.Array, process: str, class_names: list[str], n: int) -> dict:
    label = class_names.index(process)
    return {
        "label": pa.array(np.full(n, label, dtype=np.int32)),
        "process": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [process]).cast(pa.string()),
        **{name: _flat(events[name], typ, name) for name, typ in
           (("weight", pa.float32()), ("run", pa.int64()), ("lumi", pa.int64()), ("event", pa.int64()))},
    }


def _flat(values: Any, typ: pa.DataType, name: str) -> pa.Array:
    array = np.asarray(ak.to_numpy(values) if isinstance(values, ak.Array) else values)
    target = np.dtype(typ.to_pandas_dtype())
    check_fits(array, target, name)
    return pa.array(array.astype(target, copy=False), type=typ)


def check_fits(values: np.ndarray, target: np.dtype, name: str) -> None:
    """ValueRangeError unless `values` fit `target`: integers integral and within its range,
    finite floats within its range (rounding to float32 is expected; overflow to inf is not)."""
    if values.dtype == target or values.size == 0 or target.kind == "b":
        return
    if values.dtype.kind not in "biuf":
        raise ValueRangeError(f"column '{name}' holds {values.dtype} values, expected numbers")
    if target.kind in "iu":
        if values.dtype.kind == "f" and not np.array_equal(values, np.trunc(values)):
            bad = values[values != np.trunc(values)][0]
            raise ValueRangeError(f"column '{name}' holds the non-integer value {bad} ({target} expected)")
        info = np.iinfo(target)
        low, high = values.min(), values.max()
        if (low < 0 and low < info.min) or (high > 0 and high > info.max):
            bad = low if low < 0 and low < info.min else high
            raise ValueRangeError(f"column '{name}' holds the value {bad}, outside {target} "
                                  f"({info.min}..{info.max})")
    elif target.kind == "f" and values.dtype.kind == "f" and values.dtype.itemsize > target.itemsize:
        limit = np.finfo(target).max
        too_big = np.isfinite(values) & (np.abs(values) > limit)
        if too_big.any():
            raise ValueRangeError(f"column '{name}' holds the value {values[too_big][0]}, "
                                  f"beyond the range of {target}")


def _list_column(collection: ak.Array, fields: dict[str, pa.DataType], name: str) -> pa.ListArray:
    """A list<struct> Arrow column straight from an awkward jagged record array (no Python loop)."""
    counts = ak.to_numpy(ak.num(collection, axis=1)).astype(np.int32)
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    flat = ak.flatten(collection, axis=1)
    children = [_flat(flat[field], typ, f"{name}.{field}") for field, typ in fields.items()]
    struct = pa.StructArray.from_arrays(children, fields=list(_struct(fields)))
    return pa.ListArray.from_arrays(pa.array(offsets), struct, type=_list_of(fields))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
