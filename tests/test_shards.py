"""Parquet -> shards: codec precision, manifest, index files, determinism, bad input."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data import objects, shards
from engine.data.canonical import parquet_io, schema
from engine.data.generation import synthetic
from engine.data.shards import encoding
from engine.data.shards.manifest import MEMBER_EXT, SPLITS
from engine.data.shards.plan import assign_splits, event_keys, plan_splits, sort_order
from engine.errors import InputError

N_PER_CLASS = 500
OPTS = dict(events_per_member=128, shard_size_mb=0.03)


@pytest.fixture(scope="module")
def event_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events")
    synthetic.write_synthetic(folder, "events", N_PER_CLASS, seed=3)
    return folder


@pytest.fixture(scope="module")
def event_shards(event_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "out"
    shards.write_shards([event_inputs], out, shards.ShardOptions(seed=5, **OPTS))
    return out


def _read_members(tar_path):
    with tarfile.open(tar_path) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers()]


def _split_blocks(root, split):
    manifest = json.loads((root / "manifest.json").read_text())
    return [data for s in manifest["splits"][split]["shards"]
            for data in _read_members(root / split / s["name"])]


def _expected_rows(inputs_folder, split, seed, **kw):
    """The events of `split` in the order written: all in one bucket, sorted by key."""
    inputs = shards.read_inputs([inputs_folder])
    opts = shards.ShardOptions(seed=seed, **kw)
    table, rows = inputs.table, [p["rows"] for p in inputs.provenance]
    labels = table.column("label").to_numpy()
    keys = event_keys(seed, labels, *(table.column(c).to_numpy() for c in ("run", "lumi", "event")))
    order = sort_order(keys, np.repeat(np.arange(len(rows)), rows), np.concatenate([np.arange(n) for n in rows]))
    plan = plan_splits(np.bincount(labels, minlength=len(inputs.class_names))[:, None], opts.split, opts.balance)
    codes = assign_splits(labels[order], plan.class_start[:, 0], plan.cuts)
    return table.take(pa.array(order[codes == SPLITS.index(split)]))


def _assert_close(ref, got, kind):
    feats = ref["features" if kind == "events" else "constituents"]
    mine = got["features" if kind == "events" else "constituents"]
    pt = feats[..., 0]
    assert np.all(np.abs(mine[..., 0] - pt) <= 2 ** -11 * np.abs(pt) + 1e-6)
    assert np.all(np.abs(mine[..., 1] - feats[..., 1]) <= encoding.ETA_STEP / 2 + 1e-6)
    dphi = np.abs(mine[..., 2] - feats[..., 2])
    assert np.all(np.minimum(dphi, 2 * np.pi - dphi) <= encoding.PHI_STEP / 2 + 1e-6)
    if kind == "events":
        assert np.all(np.abs(mine[..., 3] - feats[..., 3]) <= 2 ** -11 * np.abs(feats[..., 3]) + 1e-6)
        assert np.all(np.abs(mine[..., 4] - feats[..., 4]) <= 2 ** -12)
        np.testing.assert_array_equal(mine[..., 5], feats[..., 5])
        np.testing.assert_array_equal(got["types"], ref["types"])
    else:
        np.testing.assert_array_equal(mine[..., 3:], feats[..., 3:])
        for key in ("fatjet", "msoftdrop", "parton"):            # exact, per fat jet
            np.testing.assert_array_equal(got[key], ref[key])
            assert got[key].dtype == ref[key].dtype
    np.testing.assert_array_equal(got["counts"], ref["counts"])
    np.testing.assert_array_equal(got["labels"], ref["labels"])


@pytest.mark.parametrize("cap", [16, 4])
def test_event_round_trip_matches_reference_padding(event_inputs, event_shards, cap):
    table = _expected_rows(event_inputs, "train", 5, **OPTS)
    decoded = [encoding.decode_padded(b, cap) for b in _split_blocks(event_shards, "train")]
    got = {k: np.concatenate([d[k] for d in decoded]) for k in ("types", "features", "counts", "labels")}
    ref = objects.pad_events(table, cap)
    _assert_close(ref, got, "events")
    assert sum(d["truncated"] for d in decoded) == ref["truncated"]
    assert (ref["truncated"] > 0) == (cap == 4)
    np.testing.assert_array_equal(np.concatenate([d["index"] for d in decoded]), np.arange(len(table)))


def test_fatjet_round_trip_with_truncation(tmp_path):
    synthetic.write_synthetic(tmp_path / "in", "fatjets", 120, seed=1)
    shards.write_shards([tmp_path / "in"], tmp_path / "out", shards.ShardOptions(events_per_member=50))
    table = _expected_rows(tmp_path / "in", "train", 0, events_per_member=50)
    decoded = [encoding.decode_padded(b, 32) for b in _split_blocks(tmp_path / "out", "train")]
    got = {k: np.concatenate([d[k] for d in decoded])
           for k in ("constituents", "counts", "fatjet", "msoftdrop", "parton", "labels")}
    ref = objects.pad_fatjets(table, 32)
    assert set(ref["parton"].tolist()) == {1, 2, 3, 4, 5, 6, 21} and np.all(ref["msoftdrop"] > 0)
    _assert_close(ref, got, "fatjets")
    assert sum(d["truncated"] for d in decoded) == ref["truncated"] > 0


def test_bytes_per_event_within_target(event_shards):
    manifest = json.loads((event_shards / "manifest.json").read_text())
    raw = sum(len(b) for b in _split_blocks(event_shards, "train"))
    assert raw / manifest["splits"]["train"]["events"] < 100    # target on disk: <= 160


def test_manifest_classes_mixing_and_split(event_shards):
    manifest = json.loads((event_shards / "manifest.json").read_text())
    assert manifest["class_names"] == ["dy", "ttbar", "wjets"]
    assert manifest["events"] == 3 * N_PER_CLASS
    train = manifest["splits"]["train"]
    assert train["events_per_class"] == [350, 350, 350]
    assert len(train["shards"]) > 2
    for entry in train["shards"]:
        assert sum(entry["events_per_class"]) == entry["events"] == sum(entry["members"])
        assert np.count_nonzero(entry["events_per_class"]) >= 2          # every shard mixes classes
        assert (event_shards / "train" / entry["name"]).stat().st_size == entry["bytes"]
    assert {i["file"] for i in manifest["inputs"]} == {"dy.parquet", "ttbar.parquet", "wjets.parquet"}
    assert all(i["engine"]["kind"] == "events" for i in manifest["inputs"])


def test_index_matches_dali_wds2idx_and_webdataset_reads_shards(event_shards, tmp_path):
    wds2idx = pytest.importorskip("wds2idx")
    wds = pytest.importorskip("webdataset")
    tar = sorted((event_shards / "train").glob("*.tar"))[0]
    with wds2idx.IndexCreator(str(tar), str(tmp_path / "x.idx"), verbose=False) as creator:
        creator.create_index()
    assert (tmp_path / "x.idx").read_text() == tar.with_suffix(".idx").read_text()
    samples = list(wds.WebDataset(str(tar), shardshuffle=False))
    assert [s[MEMBER_EXT] for s in samples] == _read_members(tar)


def test_same_seed_same_bytes_other_seed_differs(event_inputs, event_shards, tmp_path):
    def digest(root):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.tar")))).hexdigest()
    shards.write_shards([event_inputs], tmp_path / "a", shards.ShardOptions(seed=5, **OPTS))
    shards.write_shards([event_inputs], tmp_path / "b", shards.ShardOptions(seed=6, **OPTS))
    assert digest(tmp_path / "a") == digest(event_shards)
    assert digest(tmp_path / "b") != digest(event_shards)


def test_balance_and_label_union_from_process(tmp_path):
    for process, n, names in (("ttbar", 300, ["ttbar"]), ("dy", 120, ["wjets", "dy"])):
        table = schema.events_table(synthetic.synthetic_events(process, n, 1), process, names)
        parquet_io.write_table(tmp_path / "in" / f"{process}.parquet", table, "events", names, {})
    manifest = shards.write_shards([tmp_path / "in"], tmp_path / "out",
                                   shards.ShardOptions(balance=True, split=(0.5, 0.25, 0.25)))
    assert manifest["class_names"] == ["dy", "ttbar", "wjets"]
    assert manifest["splits"]["train"]["events_per_class"] == [60, 60, 0]
    labels = np.concatenate([encoding.decode(b).columns["labels"]
                             for b in _split_blocks(tmp_path / "out", "train")])
    assert sorted(np.unique(labels)) == [0, 1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", "shard", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_writes_shards(event_inputs, tmp_path):
    result = _cli("--input", event_inputs, "--out", tmp_path / "s", "--split", "0.8,0.1,0.1",
                  "--events-per-member", 200)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["events"] == 150
    assert len(list((tmp_path / "s" / "test").glob("*.idx"))) == 1


def test_cli_bad_inputs_exit_2_and_write_nothing(event_inputs, tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    synthetic.write_synthetic(tmp_path / "fat", "fatjets", 10)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    cases = [(["--input", tmp_path / "missing"], "no such file"),
             (["--input", tmp_path / "foreign.parquet"], "not written by this engine"),
             (["--input", event_inputs, tmp_path / "fat"], "mix kinds"),
             (["--input", event_inputs, "--split", "0.5,0.5"], "three fractions")]
    for args, message in cases:
        result = _cli(*args, "--out", tmp_path / "out")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _cli("--input", event_inputs, "--out", tmp_path / "full")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_inputs_rejects_unknown_process(tmp_path):
    table = schema.events_table(synthetic.synthetic_events("dy", 5, 1), "dy", ["dy"])
    path = tmp_path / "dy.parquet"
    parquet_io.write_table(path, table, "events", ["ttbar"], {})
    with pytest.raises(InputError, match="process missing"):
        shards.read_inputs([path])


def _edited(event_shards, tmp_path, edit):
    """A copy of the shards whose manifest went through `edit(manifest)`."""
    copy = tmp_path / "copy"
    shutil.copytree(event_shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _set(path, value):
    def edit(manifest):
        *parents, last = path
        for key in parents:
            manifest = manifest[key]
        if value is None:
            del manifest[last]
        else:
            manifest[last] = value
    return edit


@pytest.mark.parametrize("path, value, message", [
    (("kind",), None, "'kind' is None"),
    (("kind",), "jets", "'kind' is 'jets'"),
    (("class_names",), None, "'class_names' must be"),
    (("class_names",), [], "'class_names' must be"),
    (("class_names",), ["dy", "dy", "wjets"], "'class_names' must be"),
    (("splits",), None, "'splits' must be"),
    (("splits",), [], "'splits' must be"),
    (("splits", "val", "events"), "150", "'splits.val.events' must be"),
    (("splits", "val", "events"), 151, "'splits.val.events' is not the sum"),
    (("splits", "val", "events_per_class"), [1, 2], "must list 3 counts"),
    (("splits", "train", "shards", 0, "name"), "../x.tar", "'name' must be a plain file name"),
    (("splits", "train", "shards", 0, "members"), None, "'members' must be"),
    (("splits", "train", "shards", 0, "members"), [1, 2], "not the sum of its members"),
    (("splits", "train", "shards", 1, "bytes"), -1, "'bytes' must be"),
    (("splits", "train", "shards", 1, "events_per_class"), [0, 0, 1], "not the sum of its members"),
    (("events",), 1, "'events' is not the sum"),
])
def test_inconsistent_manifest_is_one_line(event_shards, tmp_path, path, value, message):
    copy = _edited(event_shards, tmp_path, _set(path, value))
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        shards.open_split(copy, "train")
    assert caught.value.source == str(copy / "manifest.json") and "\n" not in str(caught.value)


@pytest.mark.slow
def test_manifest_missing_a_key_exits_2_from_every_command(event_shards, tmp_path):
    copy = _edited(event_shards, tmp_path, _set(("splits",), None))
    for command in (["inspect", copy], ["render", "--input", copy, "--out", tmp_path / "img"]):
        result = subprocess.run([sys.executable, "-m", "engine", *map(str, command)],
                                capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == f"error: {copy / 'manifest.json'}: 'splits' must be a " \
                                        "non-empty object of splits"


def test_parquet_where_shards_are_needed(event_inputs, tmp_path):
    message = "holds Parquet files, not shards: run `python -m engine shard` first"
    for path in (event_inputs, next(event_inputs.glob("*.parquet"))):
        for read in (shards.load_manifest, shards.open_split, shards.locate_split):
            with pytest.raises(InputError, match=re.escape(message)) as caught:
                read(path)
            assert caught.value.source == str(path)
    with pytest.raises(InputError, match="no such shard folder"):
        shards.load_manifest(tmp_path / "nothing")
    (tmp_path / "lost" / "train").mkdir(parents=True)        # shards that lost their manifest
    for name in ("train/train-00000.tar", "train/sidecar.parquet"):
        (tmp_path / "lost" / name).write_bytes(b"x")
    for path in (tmp_path / "lost", tmp_path / "lost" / "train"):
        with pytest.raises(InputError, match="no manifest.json here"):
            shards.load_manifest(path)


def test_stale_temporaries_of_the_same_target_are_removed(event_inputs, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale, running = tmp_path / f".out.tmp-{dead}", tmp_path / f".out.tmp-{os.getppid()}"
    reused = tmp_path / f".out.tmp-{os.getpid()}"          # a killed run's pid, now this process's
    others = [tmp_path / f".other.tmp-{dead}", tmp_path / f".out.tmp-{dead}x", tmp_path / "out.tmp-1"]
    for folder in (stale, running, reused, *others):
        (folder / "train").mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="unfinished output of a `shard` run"):
        shards.open_split(stale / "train")
    shards.write_shards([event_inputs], tmp_path / "out", shards.ShardOptions(seed=5, **OPTS))
    assert not stale.exists() and not reused.exists()
    assert running.exists() and all(p.exists() for p in others)
    assert shards.open_split(tmp_path / "out").events_readable == 350 * 3
