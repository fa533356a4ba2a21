"""DALI backend of the loader (`loader.backend: dali`): `fn.readers.webdataset` reads the blocks.

The reader yields whole tar members (one block of events each) using the index files written by
`shard`; blocks are decoded and padded in numpy after the pipeline (engine.data.shards.encoding),
then batched and shuffled in windows exactly like the torch backend
(engine.data.loader.batching.window_batches).
The pipeline runs on the CPU (device_id=None) on machines without a GPU, and is bound to the
current CUDA device when there is one (the reader itself is a CPU operator).

Epoch semantics: DALI shards by sample (block) count: shard s reads blocks
[floor(N s / W), floor(N (s + 1) / W)) of the concatenated shards (N blocks, W ranks). In epoch e,
rank r reads DALI shard (r + e) mod W, so ranks rotate over the data. Every rank delivers
ceil(E_max / batch_size) batches (E_max: events of the largest DALI shard): a rank with fewer
events repeats its first events (counted as `events_repeated`); with `drop_last`, every rank
delivers floor(E_min / batch_size) full batches. Over one epoch, all ranks together deliver every
event of the readable shards (plus the counted repeats), like the torch backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from engine.data.loader.base import Batch, LoaderConfig, StreamLoader
from engine.data.loader.batching import window_batches
from engine.data.loader.plan import dali_shard_blocks, dali_shard_events
from engine.data.shards import encoding
from engine.data.shards.manifest import MEMBER_EXT
from engine.data.shards.reader import ShardInfo, SplitData, decode_member
from engine.errors import InputError


class DaliLoader(StreamLoader):
    """Same public API as the torch backend (see engine.data.loader)."""

    def __init__(self, data: SplitData, cfg: LoaderConfig, rank: int, world_size: int):
        if not isinstance(data.root, Path):
            raise InputError(data.root, "DALI's reader reads local shards only: use "
                                        "`loader.backend: torch` for shards behind a URL")
        if cfg.max_events:
            raise InputError("loader.max_events", "a subset of the split needs the torch backend "
                                                  "(DALI's reader shards by whole samples)")
        super().__init__(data, cfg, rank, world_size)
        self.block_events = np.concatenate([s.events for s in data.shards] or [np.zeros(0, np.int64)])
        if 0 < len(self.block_events) < world_size:
            raise InputError(data.root / data.split, f"{len(self.block_events)} blocks cannot be shared by "
                                                     f"{world_size} DALI ranks (DALI splits by whole blocks): "
                                                     "use loader.backend: torch, or shard with a smaller "
                                                     "--events-per-member")
        self.shard_events = dali_shard_events(self.block_events, world_size)
        self.members = {(str(s.path), name): (s, j) for s in data.shards for j, name in enumerate(s.members)}

    def _shard(self) -> int:
        return (self.rank + self.epoch) % self.world_size

    def _stream(self) -> int:
        if self.cfg.drop_last:
            return int(self.shard_events.min()) // self.cfg.batch_size * self.cfg.batch_size
        return int(self.shard_events.max())

    def _n_batches(self) -> int:
        return -(-self._stream() // self.cfg.batch_size)

    def _events_own(self) -> tuple[int, int]:
        return int(self.shard_events[self._shard()]), self._stream()

    def _batches(self, skip: int) -> Iterator[Batch]:
        if not self.data.shards:
            return iter(())
        return window_batches(self._segments(), self._stream(), self.kind, self.cap, self.cfg,
                              [self.cfg.seed, self.epoch, self.rank, 0], skip)

    def _pipeline(self):
        from nvidia.dali import fn, pipeline_def, types
        import torch

        cfg, shard = self.cfg, self._shard()
        paths = [str(s.path) for s in self.data.shards]
        index_paths = [str(s.path.with_suffix(".idx")) for s in self.data.shards]

        @pipeline_def
        def read_blocks():
            return fn.readers.webdataset(
                paths=paths, index_paths=index_paths, ext=[MEMBER_EXT], dtypes=[types.UINT8],
                num_shards=self.world_size, shard_id=shard, random_shuffle=cfg.shuffle,
                initial_fill=cfg.dali_initial_fill, pad_last_batch=True, stick_to_shard=True,
                seed=_seed(cfg.seed, self.epoch, shard), name="Reader")

        device = torch.cuda.current_device() if torch.cuda.is_available() else None
        pipe = read_blocks(batch_size=cfg.dali_blocks_per_run, num_threads=1, device_id=device,
                           seed=_seed(cfg.seed, self.epoch, shard), prefetch_queue_depth=2)
        pipe.build()
        return pipe

    def _segments(self) -> Iterator[tuple]:
        """(load, lo, hi) of the blocks of this rank's DALI shard, then repeats of its first events."""
        pipe = self._pipeline()
        remaining = dali_shard_blocks(len(self.block_events), self.world_size, self._shard())
        first_blocks, own, kept = [], 0, 0
        need = self._stream() - int(self.shard_events[self._shard()])     # repeats, if any
        while remaining > 0:
            (samples,) = pipe.run()
            for i in range(min(remaining, len(samples))):
                load = self._member(samples[i])
                n = int(load.shard.events[load.j])
                if kept < need:
                    first_blocks.append((load, n))
                    kept += n
                own += n
                yield load, 0, n
            remaining -= len(samples)
        del pipe
        yield from _repeats(first_blocks, self._stream() - own)

    def _member(self, sample) -> "_Decode":
        """The loader of one sample DALI read; its source_info() is 'TAR:OFFSET:MEMBER'."""
        source = sample.source_info()
        parts = source.rsplit(":", 2)
        found = self.members.get((parts[0], parts[-1])) if len(parts) == 3 else None
        if found is None:
            raise InputError(source, "DALI read a sample that is not a member listed in the index")
        shard, j = found
        return _Decode(np.array(sample), shard, j, self.data.n_classes)   # copy: DALI reuses buffers


def _repeats(blocks: list[tuple["_Decode", int]], needed: int) -> Iterator[tuple]:
    """Segments repeating the first `needed` events of `blocks` (cycling if needed)."""
    while needed > 0 and blocks:
        for load, n in blocks:
            k = min(n, needed)
            if k <= 0:
                return
            yield load, 0, k
            needed -= k


def _seed(seed: int, epoch: int, shard: int) -> int:
    return int(np.random.default_rng([seed, epoch, shard]).integers(0, 2 ** 31 - 1))


class _Decode:
    """Decodes the bytes of member j of a shard (checked like the torch backend's blocks)."""

    def __init__(self, data: np.ndarray, shard: ShardInfo, j: int, n_classes: int):
        self.data, self.shard, self.j, self.n_classes = data, shard, j, n_classes

    def __call__(self) -> encoding.Block:
        return decode_member(memoryview(self.data), self.shard, self.j, self.n_classes)
