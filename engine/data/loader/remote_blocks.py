"""Reading blocks of a split behind a URL: one ranged request per block, fetched ahead of use
by a few threads (`loader.prefetch_blocks`), kept in a local cache (`loader.cache_dir`).

Prefetching only changes when a block is fetched, never which block is delivered where: the
reader is told the order in which its worker will load blocks (`schedule`), fetches (and
decodes) the next `prefetch_blocks` of them in threads, and hands each out when the batching
asks for it; a block the batching does not ask for (a window passed over on resume) is dropped.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

from engine.data import remote
from engine.data.loader.base import BlockReader, LoaderConfig
from engine.data.loader.cache import BlockCache
from engine.data.shards import encoding
from engine.data.shards.reader import SplitData, decode_member
from engine.data.shards.remote_split import read_member


def block_reader(data: SplitData, cfg: LoaderConfig) -> BlockReader:
    """The block reader of a split: pread for a local one, `RemoteBlockReader` behind a URL."""
    if isinstance(data.root, remote.URL):
        return RemoteBlockReader(data, cfg)
    return BlockReader(data)


class RemoteBlockReader(BlockReader):
    """BlockReader over ranged requests, with prefetch threads and an optional local cache."""

    def __init__(self, data: SplitData, cfg: LoaderConfig):
        super().__init__(data)
        self.kind, self.depth = data.kind, cfg.prefetch_blocks
        self.cache = (BlockCache(cfg.cache_dir, int(cfg.cache_gb * 2 ** 30)) if cfg.cache_dir
                      else None)
        self._order: list[int] = []
        self._next = 0                             # position in _order of the next block to load
        self._futures: dict[int, Future] = {}      # position -> the block being fetched
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def __getstate__(self) -> dict:                # threads stay in the process that made them
        return {**self.__dict__, "_pool": None, "_futures": {}, "_pid": 0}

    def schedule(self, blocks: list[int]) -> None:
        """The block ids this reader will load next, in order (repeats allowed)."""
        for future in self._futures.values():
            future.cancel()
        self._order, self._next, self._futures = list(blocks), 0, {}
        self._submit(range(min(self.depth, len(self._order))))   # while the first window is made

    def load(self, block_id: int) -> encoding.Block:
        try:
            pos = self._order.index(block_id, self._next)
        except ValueError:                         # not scheduled: fetched now
            return self._fetch(block_id)
        for p in [p for p in self._futures if p < pos]:
            self._futures.pop(p).cancel()
        self._next = pos + 1
        self._submit(range(pos, min(pos + 1 + self.depth, len(self._order))))
        return self._futures.pop(pos).result()

    def _submit(self, positions: range) -> None:
        if self._pool is None or self._pid != os.getpid():
            self._pool, self._pid = ThreadPoolExecutor(max(1, self.depth)), os.getpid()
        for p in positions:
            if p not in self._futures:
                self._futures[p] = self._pool.submit(self._fetch, self._order[p])

    def _fetch(self, block_id: int) -> encoding.Block:
        shard, j = self.shards[self.shard_of[block_id]], int(self.member_of[block_id])
        size = int(shard.sizes[j])
        key = data = None
        if self.cache is not None:
            key = BlockCache.key(shard.path, shard.version, int(shard.offsets[j]), size)
            data = self.cache.get(key, size)
        if data is None:
            data = read_member(shard, j, self.kind)
            if key is not None:
                self.cache.put(key, data)
        return decode_member(data, shard, j, self.n_classes)
