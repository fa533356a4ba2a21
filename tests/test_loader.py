"""The streaming loader (torch backend): exact splitting, determinism, resume, bad shards."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.config import from_dict
from engine.data import shards
from engine.data.loader import LoaderConfig, make_loader
from engine.data.shards import encoding
from engine.data.shards.inspect import format_inspection, inspect_shards
from engine.data.shards.reader import read_index
from engine.errors import InputError
from tests.events import synthetic_shards

BATCH = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("loader")
    return synthetic_shards(base, 400, seed=2, shard_seed=1, events_per_member=100, shard_size_mb=0.02)


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    base = tmp_path_factory.mktemp("one")
    return synthetic_shards(base, 130, seed=4, shard_seed=0, events_per_member=64, split=(1.0, 0.0, 0.0))


def _cfg(**kw):
    return LoaderConfig(**{"batch_size": BATCH, "shuffle_buffer": 256, **kw})


def _epoch(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def _index(batches):
    return torch.cat([b["index"] for b in batches]).numpy() if batches else np.zeros(0, np.int64)


def _reference(root, split):
    """Padded arrays of every event of a split, in index order, decoded block by block."""
    data = shards.open_split(root, split)
    blocks = []
    for s in data.shards:
        raw = s.path.read_bytes()
        blocks += [encoding.decode_padded(raw[o:o + n], 16) for o, n in zip(s.offsets, s.sizes)]
    return {k: np.concatenate([b[k] for b in blocks]) for k in ("types", "features", "counts", "labels")}


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_event_exactly_once_equal_batches(root, world, workers):
    total = json.loads((root / "manifest.json").read_text())["splits"]["train"]["events"]
    seen, lengths, repeats = [], set(), 0
    for rank in range(world):
        loader = make_loader(root, _cfg(workers=workers), rank, world)
        batches = _epoch(loader)
        lengths.add((len(batches), len(loader)))
        seen.append(_index(batches))
        summary = loader.summary()
        assert summary["complete"] and summary["events_delivered"] == len(seen[-1])
        repeats += summary["events_repeated"]
    assert len(lengths) == 1 and len(set(lengths.pop())) == 1        # same count on every rank
    everything = np.concatenate(seen)
    np.testing.assert_array_equal(np.unique(everything), np.arange(total))
    assert len(everything) - total == repeats < world


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [0, 2])
def test_max_events_is_a_fixed_subset_every_epoch(root, world, workers):
    k = 101                                           # not a multiple of the block or batch size
    per_epoch = []
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            loader = make_loader(root, _cfg(workers=workers, max_events=k), rank, world)
            loader.set_epoch(epoch)
            seen.append(_index(_epoch(loader)))
        per_epoch.append(np.concatenate(seen))
    for everything in per_epoch:
        np.testing.assert_array_equal(np.unique(everything), np.arange(k))
        assert len(everything) - k < world           # at most the counted one-event padding


def test_max_events_needs_the_torch_backend(root):
    pytest.importorskip("nvidia.dali")
    with pytest.raises(InputError, match="max_events"):
        make_loader(root, _cfg(backend="dali", max_events=10))


@pytest.mark.parametrize("batch_size", [16, 256])          # 256: one batch, an idle worker
def test_fewer_shards_than_ranks_times_workers(one_shard, batch_size):
    total = json.loads((one_shard / "manifest.json").read_text())["splits"]["train"]["events"]
    assert len(list((one_shard / "train").glob("*.tar"))) == 1
    per_rank = [_epoch(make_loader(one_shard, _cfg(batch_size=batch_size, workers=2), r, 3))
                for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) > 0
    np.testing.assert_array_equal(np.unique(np.concatenate([_index(b) for b in per_rank])),
                                  np.arange(total))


def test_values_match_reference_decode(root):
    ref = _reference(root, "val")
    batches = _epoch(make_loader(root / "val", _cfg(workers=1)))
    index = _index(batches)
    for key, dtype in (("types", torch.int8), ("features", torch.float32), ("counts", torch.int32),
                       ("labels", torch.int64)):
        got = torch.cat([b[key] for b in batches])
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), ref[key][index])
    assert batches[0]["features"].shape == (BATCH, 16, 6)


def test_shuffle_mixes_shards_and_is_seeded(root):
    manifest = json.loads((root / "manifest.json").read_text())
    shard_start = np.cumsum([0] + [s["events"] for s in manifest["splits"]["train"]["shards"]])
    first = _index(_epoch(make_loader(root, _cfg()))[:1])
    assert len(np.unique(np.searchsorted(shard_start, first, "right"))) > 1
    a = _index(_epoch(make_loader(root, _cfg())))
    b = _index(_epoch(make_loader(root, _cfg())))
    c = _index(_epoch(make_loader(root, _cfg(seed=9))))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    loader = make_loader(root, _cfg())
    loader.set_epoch(1)
    d = _index(_epoch(loader))
    assert not np.array_equal(a, d) and np.array_equal(np.sort(a), np.sort(d))


@pytest.mark.parametrize("workers,world", [(0, 1), (2, 2)])
def test_resume_mid_epoch_gives_the_remaining_batches(root, workers, world):
    full = make_loader(root, _cfg(workers=workers), 1 % world, world)
    full.set_epoch(3)
    expected = _epoch(full)
    first = make_loader(root, _cfg(workers=workers), 1 % world, world)
    first.set_epoch(3)
    taken = []
    for batch in first:
        taken.append(batch["index"].clone())
        if len(taken) == 3:
            break
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make_loader(root, _cfg(workers=workers), 1 % world, world)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)
    rest = _epoch(resumed)
    assert len(rest) == len(expected) - 3
    for got, want in zip(taken + [b["index"] for b in rest], expected):
        torch.testing.assert_close(got, want["index"])
    torch.testing.assert_close(rest[-1]["features"], expected[-1]["features"])
    assert resumed.summary()["complete"]


def test_resume_rejects_other_config(root):
    state = make_loader(root, _cfg()).state_dict()
    with pytest.raises(InputError, match="batch_size"):
        make_loader(root, _cfg(batch_size=32)).load_state_dict(state)


def test_drop_last_gives_full_batches_and_counts_the_rest(root):
    loaders = [make_loader(root, _cfg(drop_last=True), r, 2) for r in range(2)]
    for loader in loaders:
        batches = _epoch(loader)
        assert all(len(b["labels"]) == BATCH for b in batches)
        s = loader.summary()
        assert s["events_delivered"] + s["events_dropped"] == s["events_rank"]


def test_config_from_yaml_dict_is_validated():
    cfg = from_dict(LoaderConfig, {"backend": "torch", "batch_size": 32, "workers": 2})
    assert cfg.batch_size == 32
    with pytest.raises(InputError, match="batchsize"):
        from_dict(LoaderConfig, {"batchsize": 3})
    with pytest.raises(InputError):
        from_dict(LoaderConfig, {"backend": "tf"})


@pytest.fixture
def damaged(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    return copy


def _first_tar(folder):
    return sorted((folder / "train").glob("*.tar"))[0]


def test_truncated_shard_is_an_error_or_skipped_and_counted(damaged):
    tar = _first_tar(damaged)
    tar.write_bytes(tar.read_bytes()[:-3000])
    with pytest.raises(InputError, match="truncated"):
        make_loader(damaged, _cfg())
    with pytest.warns(UserWarning, match="skipping shard"):
        loader = make_loader(damaged, _cfg(skip_bad=True))
    index = _index(_epoch(loader))
    s = loader.summary()
    assert s["shards_skipped"][0]["name"] == tar.name
    assert len(index) == s["events_readable"] == s["events_manifest"] - s["events_in_skipped_shards"]
    report = inspect_shards(damaged)
    assert not report["ok"] and report["problems"][0].startswith(f"{tar}: ")
    assert f"read {len(index)} events, the manifest says {s['events_manifest']}" in report["problems"][1]
    assert f"NOT OK: {len(report['problems'])} problems" in format_inspection(report)


def test_corrupt_member_is_an_error_naming_the_member(damaged):
    tar = _first_tar(damaged)
    data = bytearray(tar.read_bytes())
    offset = read_index(tar.with_suffix(".idx"))[0][0]
    data[offset + encoding.HEADER.size + 20] ^= 0xFF                  # same size, bad payload
    tar.write_bytes(bytes(data))
    with pytest.raises(InputError, match="member 000000.blk: corrupt block .CRC-32") as caught:
        _epoch(make_loader(damaged, _cfg(shuffle=False)))
    assert caught.value.source == str(tar)
    with pytest.warns(UserWarning, match=f"skipping shard train/{tar.name}.*CRC"):
        loader = make_loader(damaged, _cfg(skip_bad=True))       # found when the split is opened
    index, s = _index(_epoch(loader)), loader.summary()
    assert [k["name"] for k in s["shards_skipped"]] == [tar.name]
    assert len(np.unique(index)) == len(index) == s["events_manifest"] - s["events_in_skipped_shards"]
    assert not np.isin(np.arange(s["events_in_skipped_shards"]), index).any()   # the first shard


@pytest.mark.parametrize("workers", [0, 2])
def test_changed_under_a_running_job_is_an_error_naming_shard_and_member(damaged, workers):
    loader = make_loader(damaged, _cfg(shuffle=False, skip_bad=True, workers=workers))
    tar = _first_tar(damaged)
    offsets, sizes, names = read_index(tar.with_suffix(".idx"))
    data = bytearray(tar.read_bytes())
    data[offsets[1] + sizes[1] - 1] ^= 0x55
    tar.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"member {names[1]}: corrupt block") as caught:
        _epoch(loader)
    assert caught.value.source == str(tar)


def test_shard_deleted_under_a_running_job_is_one_line(damaged):
    loader = make_loader(damaged, _cfg(shuffle=False))
    tar = _first_tar(damaged)
    tar.unlink()
    with pytest.raises(InputError, match="unreadable .No such file") as caught:
        _epoch(loader)
    assert caught.value.source == str(tar)


def test_other_block_version_missing_index_missing_manifest(damaged):
    tar = _first_tar(damaged)
    data = bytearray(tar.read_bytes())
    data[read_index(tar.with_suffix(".idx"))[0][0] + 4] = encoding.FORMAT_VERSION + 1
    tar.write_bytes(bytes(data))
    with pytest.raises(InputError, match="block format version"):
        make_loader(damaged, _cfg())
    sorted((damaged / "val").glob("*.idx"))[0].unlink()
    with pytest.raises(InputError, match="index file is missing"):
        make_loader(damaged, _cfg(), split="val")
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["format_version"] = 99
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="format_version 99"):
        make_loader(damaged / "test", _cfg())
    (damaged / "manifest.json").unlink()
    with pytest.raises(InputError, match="no manifest.json"):
        make_loader(damaged / "test", _cfg())


def test_inspect_reports_counts_per_split_and_class(root):
    report = inspect_shards(root)
    assert report["ok"] and report["problems"] == []
    json.dumps(report)
    manifest = json.loads((root / "manifest.json").read_text())
    for name, split in report["splits"].items():
        assert split["events_read"] == manifest["splits"][name]["events"]
        assert split["events_per_class_read"] == manifest["splits"][name]["events_per_class"]
    assert list(inspect_shards(root / "val")["splits"]) == ["val"]
    assert "ok: everything matches" in format_inspection(report)


@pytest.mark.gpu
def test_batches_are_pinned_with_cuda(root):
    batch = next(iter(make_loader(root, _cfg(workers=1))))
    assert all(t.is_pinned() for t in batch.values())
    assert batch["features"].to("cuda", non_blocking=True).shape == batch["features"].shape
