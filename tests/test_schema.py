import numpy as np
import pytest

from engine.data.canonical import parquet_io, schema
from engine.errors import InputError
from engine.files import atomic_path
from tests.events import synthetic_events


def test_events_table_has_canonical_schema_and_sorted_collections():
    events = synthetic_events(200, seed=1)
    table = schema.events_table(events, "wjets", ["ttbar", "wjets"])
    assert table.schema.equals(schema.EVENT_SCHEMA)
    assert set(table.column("label").to_pylist()) == {1}
    assert set(table.column("process").to_pylist()) == {"wjets"}
    for name in schema.COLLECTIONS:
        for row in table.column(name).to_pylist():
            pts = [obj["pt"] for obj in row]
            assert pts == sorted(pts, reverse=True)


def test_sorting_keeps_fields_together():
    events = synthetic_events(50, seed=2)
    table = schema.events_table(events, "ttbar", ["ttbar"])
    original = {(round(j["pt"], 3), round(j["btag"], 4)) for ev in events.jets.tolist() for j in ev}
    written = {(round(j["pt"], 3), round(j["btag"], 4)) for ev in table.column("jets").to_pylist() for j in ev}
    assert original == written


def test_parquet_round_trip_and_metadata(tmp_path):
    events = synthetic_events(100, seed=3)
    table = schema.events_table(events, "dy", ["dy"])
    path = tmp_path / "dy.parquet"
    parquet_io.write_table(path, table, "events", ["dy"], {"tool": "test", "seed": 3})
    pf, meta = parquet_io.open_parquet(path)
    assert meta["schema_version"] == schema.SCHEMA_VERSION
    assert meta["class_names"] == ["dy"] and meta["provenance"]["seed"] == 3
    back = pf.read()
    assert back.drop_columns([]).cast(schema.EVENT_SCHEMA).equals(table)
    only = next(parquet_io.iter_batches(path, columns=["met_pt"]))
    assert only.schema.names == ["met_pt"]


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.parquet"
    table = schema.events_table(synthetic_events(10), "dy", ["dy"])
    with pytest.raises(RuntimeError):
        with parquet_io.ParquetSink(path, "events", ["dy"], {}) as sink:
            sink.write(table)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_check_finite_names_the_column():
    events = synthetic_events(20, seed=4)
    parquet_io.check_finite(schema.events_table(events, "dy", ["dy"]), "ok.parquet")
    events["jets", "pt"] = events.jets.pt * np.inf
    bad = schema.events_table(events, "dy", ["dy"])
    with pytest.raises(InputError, match=r"bad\.parquet: .*'jets\.pt'"):
        parquet_io.check_finite(bad, "bad.parquet")


def test_open_rejects_foreign_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(InputError, match="no engine metadata"):
        parquet_io.open_parquet(path)


@pytest.mark.parametrize("values,target,fits", [
    (np.array([127, -128], np.int32), np.int8, True),
    (np.array([128], np.int32), np.int8, False),
    (np.array([-129], np.int64), np.int8, False),
    (np.array([1000], np.int32), np.int8, False),
    (np.array([1.0, -1.0], np.float32), np.int8, True),
    (np.array([0.5], np.float32), np.int8, False),
    (np.array([np.nan], np.float64), np.int32, False),
    (np.array([2**31 - 1], np.int64), np.int32, True),
    (np.array([2**31], np.int64), np.int32, False),
    (np.array([2**63 - 1], np.uint64), np.int64, True),
    (np.array([2**63], np.uint64), np.int64, False),
    (np.array([3.4e38, -3.4e38], np.float64), np.float32, True),
    (np.array([3.5e38], np.float64), np.float32, False),
    (np.array([np.inf], np.float64), np.float32, True),  # inf stays inf: check_finite names it
    (np.array(["1"]), np.float32, False),
])
def test_values_that_do_not_fit_are_an_error_not_wrapped(values, target, fits):
    if fits:
        schema.check_fits(values, np.dtype(target), "col")
    else:
        with pytest.raises(schema.ValueRangeError, match="column 'col'"):
            schema.check_fits(values, np.dtype(target), "col")


def test_events_table_names_the_column_out_of_range():
    import awkward as ak

    events = synthetic_events(20, seed=4)
    muons = events.muons
    events = ak.with_field(events, ak.with_field(muons, ak.values_astype(muons.charge, np.int32) * 200,
                                                 "charge"), "muons")
    assert ak.sum(ak.num(events.muons)) > 0
    with pytest.raises(schema.ValueRangeError, match="'muons.charge' holds the value"):
        schema.events_table(events, "ttbar", ["ttbar"])


def test_fatjet_pid_out_of_int32_range():
    import awkward as ak
    from engine.data.generation.synthetic import synthetic_fatjets

    jets = synthetic_fatjets("qcd", 5, seed=1)
    c = jets.constituents
    jets = ak.with_field(jets, ak.with_field(c, ak.values_astype(c.pid, np.int64) + 2**31, "pid"),
                         "constituents")
    with pytest.raises(schema.ValueRangeError, match="'constituents.pid'"):
        schema.fatjets_table(jets, "qcd", ["qcd"])


def test_atomic_path_removes_only_dead_writers_temporaries(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    final = tmp_path / "x.parquet"
    stale = [tmp_path / f".x.parquet.tmp-{dead}", tmp_path / f".x.parquet.tmp-{dead}-ab12"]
    alive = [tmp_path / f".x.parquet.tmp-{os.getppid()}-cd34", tmp_path / f".y.parquet.tmp-{dead}-ab12",
             tmp_path / f".x.parquet.tmp-{dead}-another_host-ab12"]
    for path in stale + alive:
        path.write_bytes(b"half")
    with atomic_path(final) as first, atomic_path(final) as second:
        assert first != second and first.name.startswith(".x.parquet.tmp-")
        first.write_text("1")
        second.write_text("2")
    assert final.read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name] + [p.name for p in alive])
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        with atomic_path(tmp_path / "folder.parquet"):
            pass
