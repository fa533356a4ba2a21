"""The local cache of remote blocks: a second epoch needs no server, a changed shard folder is
never served stale, the size bound evicts the least recently used, processes share it safely."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import time

import pytest
import torch

from engine.data.loader import LoaderConfig, make_loader
from engine.data.loader.cache import BlockCache
from engine.errors import InputError
from tests.events import synthetic_shards
from tests.servers import s3_server, upload


def _cfg(**kw):
    return LoaderConfig(**{"batch_size": 64, "shuffle_buffer": 256, **kw})


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [b["index"].clone() for b in loader]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    base = tmp_path_factory.mktemp("cache")
    return synthetic_shards(base, 300, seed=5, shard_seed=2, events_per_member=100, shard_size_mb=0.02)


def test_the_second_epoch_reads_the_cache_with_the_server_down(local, tmp_path):
    want = make_loader(local, _cfg())
    with s3_server():
        url = upload(local, "s3://cached/shards")
        cached = make_loader(url, _cfg(cache_dir=str(tmp_path / "cache")))
        plain = make_loader(url, _cfg())
        first = _epoch(cached, 0)
        _epoch(plain, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, _epoch(want, 0)))
    second = _epoch(cached, 1)                   # the server is gone: every block from the cache
    assert len(second) == len(_epoch(want, 1))
    assert all(torch.equal(a, b) for a, b in zip(second, _epoch(want, 1)))
    with pytest.raises(InputError) as exc:       # no cache: the same epoch needs the server
        _epoch(plain, 1)
    assert str(exc.value).startswith("s3://cached/shards/train/train-0000")
    assert "cannot read from the server" in str(exc.value)


def test_a_rewritten_shard_folder_is_never_served_stale(local, tmp_path):
    other = synthetic_shards(tmp_path / "other", 300, seed=6, shard_seed=3, events_per_member=100,
                             shard_size_mb=0.02)
    cache = str(tmp_path / "cache")
    with s3_server():
        url = upload(local, "s3://cached/shards")
        _epoch(make_loader(url, _cfg(cache_dir=cache)), 0)
        import s3fs
        s3fs.S3FileSystem(skip_instance_cache=True).rm("cached/shards", recursive=True)
        upload(other, url)
        got = _epoch(make_loader(url, _cfg(cache_dir=cache)), 0)
    assert all(torch.equal(a, b) for a, b in zip(got, _epoch(make_loader(other, _cfg()), 0)))


def test_the_bound_evicts_the_least_recently_used(tmp_path):
    cache = BlockCache(tmp_path, max_bytes=3000)
    for name in "abc":
        cache.put(name * 8, name.encode() * 1000)
        time.sleep(0.02)
    assert cache.get("a" * 8, 1000) == b"a" * 1000        # a is now the most recently used
    assert cache.get("a" * 8, 999) is None                # a size that differs is a miss
    time.sleep(0.02)
    cache.put("d" * 8, b"d" * 1000)                       # 4000 > 3000: down to 2700 bytes
    assert [cache.get(k * 8, 1000) is not None for k in "abcd"] == [True, False, False, True]
    assert not [p for p in tmp_path.rglob(".*")]          # no temporaries left


def _hammer(folder: str, seed: int) -> int:
    """Put and get blocks whose bytes derive from their key; returns the wrong reads seen."""
    cache, wrong = BlockCache(folder, max_bytes=40_000), 0
    for i in range(300):
        key = hashlib.sha256(f"{(i * 7 + seed) % 60}".encode()).hexdigest()
        data = cache.get(key, 2000)
        if data is None:
            cache.put(key, key.encode() * 31 + key[:16].encode())
        elif data != key.encode() * 31 + key[:16].encode():
            wrong += 1
    return wrong


def test_processes_sharing_a_cache_never_read_a_partial_block(tmp_path):
    with multiprocessing.get_context("fork").Pool(3) as pool:
        assert pool.starmap(_hammer, [(str(tmp_path), s) for s in range(3)]) == [0, 0, 0]
    blocks = [p for p in tmp_path.rglob("*.blk") if not p.name.startswith(".")]
    assert blocks and sum(p.stat().st_size for p in blocks) <= 40_000 + 3 * 2000
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    cache = BlockCache(tmp_path, max_bytes=10_000)
    cache.put("ab" * 4, b"x" * 100)
    dead = tmp_path / "ab" / ".abababab.blk.tmp-999999999"
    dead.write_bytes(b"half")
    os.utime(dead)
    BlockCache(tmp_path, max_bytes=10_000).put("cd" * 4, b"y" * 100)    # counts the folder: sweeps
    assert not dead.exists() and cache.get("ab" * 4, 100) == b"x" * 100
    shutil.rmtree(tmp_path / "ab")
    assert cache.get("ab" * 4, 100) is None


KILLED = """
import os, signal, sys
from engine.data.loader import LoaderConfig, make_loader
loader = make_loader(sys.argv[1], LoaderConfig(batch_size=64, shuffle_buffer=256, cache_dir=sys.argv[2],
                                               prefetch_blocks=8))
for i, batch in enumerate(loader):
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_reader_killed_while_filling_the_cache_leaves_it_usable(local, tmp_path):
    import signal
    import subprocess
    import sys
    cache = tmp_path / "cache"
    with s3_server():
        url = upload(local, "s3://killed/shards")
        done = subprocess.run([sys.executable, "-c", KILLED, url, str(cache)], timeout=120)
        assert done.returncode == -signal.SIGKILL
        sizes = {int(n) for s in make_loader(local, _cfg()).data.shards for n in s.sizes}
        kept = [p for p in cache.rglob("*.blk") if not p.name.startswith(".")]
        assert kept and all(p.stat().st_size in sizes for p in kept)     # whole blocks only
        got = _epoch(make_loader(url, _cfg(cache_dir=str(cache))), 0)
    assert all(torch.equal(a, b) for a, b in zip(got, _epoch(make_loader(local, _cfg()), 0)))
