"""`shard` as an external shuffle: the same splits whatever the number of buckets, the same bytes
whatever the executor's workers, every event once, balance, a tiny memory budget, kills, options."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from engine.data import objects, shards
from engine.data.canonical import parquet_io, schema
from engine.data.generation import synthetic
from engine.data.loader import LoaderConfig, make_loader
from engine.data.shards import encoding
from engine.data.shards import inputs as shard_inputs
from engine.data.shards.inspect import inspect_shards
from engine.data.shards.plan import (MAX_BUCKET_BITS, assign_splits, bucket_bits, buckets_of, event_keys,
                                     plan_splits)
from engine.data.tasks import ClusterConfig, ExecutorSpec
from engine.errors import InputError

N_PER_CLASS = 400
OPTS = dict(seed=11, events_per_member=64, shard_size_mb=0.02)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events")
    synthetic.write_synthetic(folder, "events", N_PER_CLASS, seed=4)
    return folder


def _write(inputs, out, executor=None, **options):
    return shards.write_shards([inputs], out, shards.ShardOptions(**{**OPTS, **options}), executor)


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def _split_events(root, split):
    """(identity by index, labels by index) of a split, read through the blocks."""
    identity = shards.read_identity(root, split)
    labels, index = [], []
    data = shards.open_split(root, split)
    for info in data.shards:
        with open(info.path, "rb") as f:
            for j in range(len(info.offsets)):
                f.seek(int(info.offsets[j]))
                block = encoding.decode(f.read(int(info.sizes[j])))
                labels.append(block.columns["labels"])
                index.append(block.first_index + np.arange(block.n_events))
    index = np.concatenate(index) if index else np.zeros(0, np.int64)
    np.testing.assert_array_equal(index, np.arange(len(index)))       # blocks in index order
    labels = np.concatenate(labels) if labels else np.zeros(0, np.uint8)
    return identity, labels.astype(np.int64)


def _events(root, split):
    """Set of (label, run, lumi, event) of a split, checking none is there twice."""
    identity, labels = _split_events(root, split)
    rows = list(zip(labels.tolist(), *(identity[c].tolist() for c in ("run", "lumi", "event"))))
    assert len(set(rows)) == len(rows)
    return rows


@pytest.mark.parametrize("max_bucket_events", [1, 37, 250])
def test_same_events_and_order_whatever_the_bucket_count(inputs, tmp_path, max_bucket_events):
    one = _write(inputs, tmp_path / "one")
    many = _write(inputs, tmp_path / "many", max_bucket_events=max_bucket_events)
    assert one["buckets"] == 1 and many["buckets"] >= 1200 // max_bucket_events
    for split in shards.SPLITS:
        assert _events(tmp_path / "one", split) == _events(tmp_path / "many", split)   # same order too
        assert one["splits"][split]["events_per_class"] == many["splits"][split]["events_per_class"]
    expected = {"train": 280, "val": 60, "test": 60}            # round(0.7 * 400), round(0.15 * 400)
    for split, n in expected.items():
        assert many["splits"][split]["events_per_class"] == [n, n, n]
    assert len(many["splits"]["train"]["shards"]) > len(one["splits"]["train"]["shards"])


def test_order_mixes_classes_and_depends_on_the_seed(inputs, tmp_path):
    _write(inputs, tmp_path / "a", max_bucket_events=100)
    _write(inputs, tmp_path / "b", max_bucket_events=100, seed=12)
    labels = _split_events(tmp_path / "a", "train")[1]
    assert np.count_nonzero(np.diff(labels)) > len(labels) / 2            # classes interleaved
    assert _events(tmp_path / "a", "train") != _events(tmp_path / "b", "train")
    assert set(_events(tmp_path / "a", "train")) != set(_events(tmp_path / "b", "train"))


def test_same_bytes_whatever_the_worker_count(inputs, tmp_path):
    _write(inputs, tmp_path / "w1", ExecutorSpec(workers=1), max_bucket_events=100)
    _write(inputs, tmp_path / "w2", ExecutorSpec(workers=2), max_bucket_events=100)
    assert _digest(tmp_path / "w1") == _digest(tmp_path / "w2")
    assert inspect_shards(tmp_path / "w2")["ok"]


@pytest.mark.slow
def test_same_bytes_on_a_dask_cluster(inputs, tmp_path):
    pytest.importorskip("dask.distributed")
    _write(inputs, tmp_path / "local", max_bucket_events=100)
    _write(inputs, tmp_path / "dask", ExecutorSpec(kind="dask", cluster=ClusterConfig(type="local", workers=2)),
           max_bucket_events=100)
    assert _digest(tmp_path / "dask") == _digest(tmp_path / "local")


def test_fatjets_whatever_the_bucket_count(tmp_path):
    synthetic.write_synthetic(tmp_path / "in", "fatjets", 150, seed=2)
    one = shards.write_shards([tmp_path / "in"], tmp_path / "one", shards.ShardOptions(events_per_member=16))
    many = shards.write_shards([tmp_path / "in"], tmp_path / "many",
                               shards.ShardOptions(events_per_member=16, max_bucket_events=20))
    assert one["buckets"] == 1 and many["buckets"] == 16
    for split in shards.SPLITS:
        assert _events(tmp_path / "one", split) == _events(tmp_path / "many", split)
    assert [many["splits"][s]["events_per_class"] for s in shards.SPLITS] == [[105, 105], [22, 22], [23, 23]]
    assert inspect_shards(tmp_path / "many")["ok"]


def test_same_bytes_whatever_the_row_groups_and_the_read_slices(inputs, tmp_path, monkeypatch):
    reference = _write(inputs, tmp_path / "ref", max_bucket_events=100)
    monkeypatch.setattr(schema, "ROW_GROUP_ROWS", 70)
    for path in sorted(inputs.glob("*.parquet")):
        pf, meta = parquet_io.open_parquet(path)
        parquet_io.write_table(tmp_path / "small" / path.name, pf.read(), meta["kind"], meta["class_names"],
                               meta.get("provenance", {}))
    monkeypatch.setattr(shard_inputs, "GROUPS_PER_SLICE", 2)
    assert len(shard_inputs.open_inputs([tmp_path / "small"]).slices) == 3 * 3
    manifest = _write(tmp_path / "small", tmp_path / "out", ExecutorSpec(workers=2), max_bucket_events=100)
    assert manifest["splits"] == reference["splits"]
    (tmp_path / "ref" / "manifest.json").unlink()
    (tmp_path / "out" / "manifest.json").unlink()
    assert _digest(tmp_path / "out") == _digest(tmp_path / "ref")


def test_every_event_exactly_once_also_when_an_input_is_given_twice(inputs, tmp_path):
    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("ttbar", "dy"):
        shutil.copy(inputs / f"{name}.parquet", twice / f"{name}.parquet")
    shutil.copy(inputs / "dy.parquet", twice / "dy_copy.parquet")     # the same events again
    manifest = shards.write_shards([twice], tmp_path / "out",
                                   shards.ShardOptions(**{**OPTS, "max_bucket_events": 50}))
    table = shards.read_inputs([twice]).table
    assert manifest["events"] == table.num_rows == 3 * N_PER_CLASS
    found = [e for split in shards.SPLITS for e in _events_with_repeats(tmp_path / "out", split)]
    wanted = list(zip(table.column("label").to_pylist(),
                      *(table.column(c).to_pylist() for c in ("run", "lumi", "event"))))
    assert sorted(found) == sorted(wanted)
    assert manifest["splits"]["train"]["events_per_class"] == [560, 280, 0]


def _events_with_repeats(root, split):
    identity, labels = _split_events(root, split)
    return list(zip(labels.tolist(), *(identity[c].tolist() for c in ("run", "lumi", "event"))))


def test_balance_over_many_buckets(tmp_path):
    for process, n in (("ttbar", 500), ("wjets", 173), ("dy", 260)):
        table = schema.events_table(synthetic.synthetic_events(process, n, 2), process, [process])
        parquet_io.write_table(tmp_path / "in" / f"{process}.parquet", table, "events", [process], {})
    results = [shards.write_shards([tmp_path / "in"], tmp_path / f"out{m}", shards.ShardOptions(
        balance=True, split=(0.6, 0.2, 0.2), max_bucket_events=m, events_per_member=32)) for m in (None, 40)]
    for manifest in results:
        assert manifest["events"] == 3 * 173
        assert [manifest["splits"][s]["events_per_class"] for s in shards.SPLITS] == [
            [104, 104, 104], [35, 35, 35], [34, 34, 34]]
    assert results[1]["buckets"] > 1
    for split in shards.SPLITS:
        assert _events(tmp_path / "outNone", split) == _events(tmp_path / "out40", split)


def test_tiny_memory_budget_gives_many_buckets_and_a_loadable_folder(inputs, tmp_path):
    manifest = _write(inputs, tmp_path / "out", memory_gb=2e-5)          # about 5 KB per bucket
    assert manifest["buckets"] >= 64 and manifest["options"]["memory_gb"] == 2e-5
    assert inspect_shards(tmp_path / "out")["ok"]
    table = shards.read_inputs([inputs]).table
    by_id = {ids: row for row, ids in enumerate(zip(
        table.column("label").to_pylist(), *(table.column(c).to_pylist() for c in ("run", "lumi", "event"))))}
    for split in shards.SPLITS:
        loader = make_loader(tmp_path / "out", LoaderConfig(batch_size=128, shuffle=False), split=split)
        batches = list(loader)
        got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in ("index", "labels", "features",
                                                                             "types", "counts")}
        assert np.array_equal(np.sort(got["index"]), np.arange(manifest["splits"][split]["events"]))
        identity = shards.read_identity(tmp_path / "out", split)
        rows = [by_id[(label, *(int(identity[c][i]) for c in ("run", "lumi", "event")))]
                for label, i in zip(got["labels"].tolist(), got["index"].tolist())]
        ref = objects.pad_events(table.take(pa.array(rows)), 16)
        np.testing.assert_array_equal(got["types"], ref["types"])
        np.testing.assert_array_equal(got["counts"], ref["counts"])
        pt = ref["features"][..., 0]
        assert np.all(np.abs(got["features"][..., 0] - pt) <= 2 ** -11 * np.abs(pt) + 1e-6)
        assert np.all(np.abs(got["features"][..., 1] - ref["features"][..., 1]) <= encoding.ETA_STEP)


def test_plan_matches_assignment_bucket_by_bucket():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 5000)
    labels[labels == 3] = 0                                   # a class with no events
    keys = event_keys(7, labels, np.ones(5000), rng.integers(0, 50, 5000), np.arange(5000))
    order = np.argsort(keys)
    for bits in (0, 3, 6):
        buckets = buckets_of(keys, bits)
        assert np.all(np.diff(buckets[order]) >= 0)           # buckets are ranges of the key
        counts = np.zeros((4, 1 << bits), np.int64)
        np.add.at(counts, (labels, buckets), 1)
        plan = plan_splits(counts, (0.5, 0.3, 0.2), balance=True)
        whole = assign_splits(labels[order], np.zeros(4, np.int64), plan.cuts)
        for b in range(1 << bits):
            mine = order[buckets[order] == b]
            codes = assign_splits(labels[mine], plan.class_start[:, b], plan.cuts)
            np.testing.assert_array_equal(codes, whole[buckets[order] == b])
            assert np.bincount(codes, minlength=4)[:3].tolist() == plan.split_counts[:, b].tolist()
        smallest = np.bincount(labels)[:3].min()
        assert plan.cuts[:, 3].tolist() == [smallest] * 3 + [0]          # balanced; class 3 empty
        assert plan.split_counts.sum() == 3 * smallest


def test_bucket_count_from_size_and_memory_only():
    assert bucket_bits(10 ** 6, 100 * 2 ** 20, 512 * 2 ** 20, None) == 0
    assert bucket_bits(10 ** 6, 1000 * 2 ** 20, 512 * 2 ** 20, None) == 1           # 2 buckets of ~500 MB
    assert bucket_bits(10 ** 6, 1025 * 2 ** 20, 512 * 2 ** 20, None) == 2
    assert bucket_bits(10 ** 6, 100, 512 * 2 ** 20, 1000) == 10                      # <= 1000 events each
    assert bucket_bits(10 ** 9, 10 ** 12, 1.0, None) == MAX_BUCKET_BITS


def test_keys_are_seeded_and_chunk_free():
    rng = np.random.default_rng(0)
    cols = [rng.integers(0, 3, 1000), rng.integers(1, 9, 1000), rng.integers(0, 99, 1000), np.arange(1000)]
    whole = event_keys(5, *cols)
    parts = np.concatenate([event_keys(5, *(c[i:i + 137] for c in cols)) for i in range(0, 1000, 137)])
    np.testing.assert_array_equal(whole, parts)
    assert len(np.unique(whole)) == 1000 and not np.array_equal(whole, event_keys(6, *cols))
    assert np.array_equal(event_keys(-1, *cols), event_keys(2 ** 64 - 1, *cols))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", "shard", *map(str, args)], capture_output=True,
                          text=True)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "two", ""])
def test_bad_memory_gb_is_one_line(inputs, tmp_path, value):
    result = _cli("--input", inputs, "--out", tmp_path / "out", "--memory-gb", value)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"error: --memory-gb: expected a number of GB > 0, got {value!r}"
    assert os.listdir(tmp_path) == []


def test_cli_memory_and_workers(inputs, tmp_path):
    result = _cli("--input", inputs, "--out", tmp_path / "out", "--memory-gb", "0.0001", "--workers", "2",
                  "--seed", "11", "--events-per-member", "64", "--shard-size-mb", "0.02")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["buckets"] > 1 and f"{manifest['buckets']} bucket(s)" in result.stdout
    reference = _write(inputs, tmp_path / "ref", memory_gb=0.0001)
    assert reference["buckets"] == manifest["buckets"]
    assert _digest(tmp_path / "out") == _digest(tmp_path / "ref")
    bad = _cli("--input", inputs, "--out", tmp_path / "x", "--workers", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --workers: must be at least 1, got 0"


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_mid_run_leaves_nothing_visible_and_the_rerun_succeeds(inputs, tmp_path, workers):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "engine", "shard", "--input", str(inputs), "--out", str(out),
            "--memory-gb", "0.00002", "--workers", str(workers),
            *(f"--{k.replace('_', '-')}={v}" for k, v in OPTS.items())]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*/train/*.tar")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before the first shard was written"
    os.kill(proc.pid, signal.SIGKILL)                         # killed among the bucket tasks
    proc.wait()
    assert not out.exists() and [p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()] == [True]
    with pytest.raises(InputError, match="unfinished output of a `shard` run"):
        make_loader(next(tmp_path.iterdir()))
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    _write(inputs, tmp_path / "ref", memory_gb=0.00002)
    assert _digest(out) == _digest(tmp_path / "ref")


def test_a_value_no_block_can_hold_is_one_line_and_nothing_is_left(tmp_path):
    for process in ("ttbar", "dy"):
        table = schema.events_table(synthetic.synthetic_events(process, 300, 1), process, ["dy", "ttbar"])
        if process == "dy":
            met = table.column("met_pt").to_numpy().copy()
            met[200] = 70000.0                                 # above float16's largest value
            index = table.schema.get_field_index("met_pt")
            table = table.set_column(index, table.schema.field(index), pa.array(met))
        parquet_io.write_table(tmp_path / "in" / f"{process}.parquet", table, "events", ["dy", "ttbar"], {})
    result = _cli("--input", tmp_path / "in", "--out", tmp_path / "out", "--memory-gb", "0.00002",
                  "--workers", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    sources = f"{tmp_path / 'in' / 'dy.parquet'}, {tmp_path / 'in' / 'ttbar.parquet'}"
    assert result.stderr.strip() == f"error: {sources}: 'pt' has values not representable as float16 (|x| > 65504)"
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_scale_benchmark_measures_a_child_run(tmp_path):
    from benchmarks.scale_shard import measure_shard
    records = measure_shard([3001], 0.0001, tmp_path)
    assert [r["name"] for r in records] == ["shard_peak_rss", "shard_events_per_s"]
    assert records[0]["params"] == {"events": 3001, "memory_gb": 0.0001, "buckets": 32, "workers": 1}
    assert 50 < records[0]["value"] < 2000 and records[0]["unit"] == "MiB" and records[1]["value"] > 0
    assert os.listdir(tmp_path) == []                                   # its inputs and shards removed
