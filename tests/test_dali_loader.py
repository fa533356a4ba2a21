"""The DALI backend: same events per epoch as the torch backend, equal batches per rank."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.data.loader import LoaderConfig, make_loader
from engine.data.loader.plan import dali_shard_events
from engine.data.shards.reader import read_index
from engine.errors import InputError
from tests.events import synthetic_shards

pytest.importorskip("nvidia.dali")

BATCH = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("dali")
    return synthetic_shards(base, 300, seed=7, shard_seed=2, events_per_member=50, shard_size_mb=0.01)


def _cfg(**kw):
    return LoaderConfig(**{"backend": "dali", "batch_size": BATCH, "shuffle_buffer": 128,
                           "dali_initial_fill": 4, **kw})


def _epoch(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def _index(batches):
    return torch.cat([b["index"] for b in batches]).numpy()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_same_events_as_torch_backend_equal_batches(root, world):
    total = json.loads((root / "manifest.json").read_text())["splits"]["train"]["events"]
    seen, counts, repeats = [], set(), 0
    for rank in range(world):
        loader = make_loader(root, _cfg(), rank, world)
        batches = _epoch(loader)
        counts.add((len(batches), len(loader)))
        seen.append(_index(batches))
        repeats += loader.summary()["events_repeated"]
    assert len(counts) == 1 and len(set(counts.pop())) == 1
    dali = np.concatenate(seen)
    torch_set = np.concatenate([_index(_epoch(make_loader(root, LoaderConfig(batch_size=BATCH),
                                                          r, world))) for r in range(world)])
    np.testing.assert_array_equal(np.unique(dali), np.unique(torch_set))
    np.testing.assert_array_equal(np.unique(dali), np.arange(total))
    assert len(dali) - total == repeats


def test_values_agree_with_torch_backend(root):
    dali = _epoch(make_loader(root / "val", _cfg()))
    ref = _epoch(make_loader(root / "val", LoaderConfig(batch_size=BATCH)))
    order_d, order_t = np.argsort(_index(dali)), np.argsort(_index(ref))
    for key in ("types", "features", "counts", "labels", "weights"):
        a = torch.cat([b[key] for b in dali]).numpy()[order_d]
        b = torch.cat([b[key] for b in ref]).numpy()[order_t]
        np.testing.assert_array_equal(a, b)


def test_seeded_epochs_and_resume(root):
    def run(epoch, seed=0):
        loader = make_loader(root, _cfg(seed=seed))
        loader.set_epoch(epoch)
        return _index(_epoch(loader))
    a, b = run(0), run(0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(1))
    first = make_loader(root, _cfg())
    for done, _ in enumerate(first, 1):
        if done == 2:
            break
    resumed = make_loader(root, _cfg())
    resumed.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(_index(_epoch(resumed)), a[2 * BATCH:])


def test_corrupt_block_error_names_the_shard_and_member(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    tar = sorted((copy / "train").glob("*.tar"))[-1]
    offsets, sizes, names = read_index(tar.with_suffix(".idx"))
    data = bytearray(tar.read_bytes())
    data[offsets[-1] + sizes[-1] - 2] ^= 0x0F                       # payload: only the CRC tells
    tar.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"member {names[-1]}: corrupt block .CRC-32") as caught:
        _epoch(make_loader(copy, _cfg(shuffle=False)))
    assert caught.value.source == str(tar)
    with pytest.warns(UserWarning, match=f"skipping shard train/{tar.name}"):
        loader = make_loader(copy, _cfg(skip_bad=True))
    index, summary = _index(_epoch(loader)), loader.summary()
    assert len(np.unique(index)) == len(index) == summary["events_readable"] > 0
    assert len(index) + summary["events_in_skipped_shards"] == summary["events_manifest"]


def test_dali_shard_sizes_follow_dali():
    np.testing.assert_array_equal(dali_shard_events(np.array([5, 5, 5, 2]), 3), [5, 5, 7])


@pytest.mark.gpu
def test_runs_with_gpu_device(root):
    loader = make_loader(root, _cfg())
    batch = next(iter(loader))
    assert batch["features"].shape[1:] == (16, 6)


def test_fat_jet_batches_carry_msoftdrop_and_parton_as_the_torch_backend(tmp_path):
    jets = synthetic_shards(tmp_path, 60, seed=3, kind="fatjets", events_per_member=20)
    dali = _epoch(make_loader(jets, _cfg(batch_size=16)))
    ref = _epoch(make_loader(jets, LoaderConfig(batch_size=16)))
    order_d, order_t = np.argsort(_index(dali)), np.argsort(_index(ref))
    for key in ("constituents", "fatjet", "msoftdrop", "parton", "labels"):
        a = torch.cat([b[key] for b in dali]).numpy()[order_d]
        b = torch.cat([b[key] for b in ref]).numpy()[order_t]
        np.testing.assert_array_equal(a, b)
    assert dali[0]["parton"].dtype == torch.int32 and dali[0]["msoftdrop"].shape == (16,)
