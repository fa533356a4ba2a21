"""The loader's config (`LoaderConfig`), the epoch, resume and accounting logic shared by the
backends (`StreamLoader`), and the block reader used by the torch backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch

from engine.data import objects
from engine.data.shards import encoding
from engine.data.shards.reader import SplitData, decode_member
from engine.errors import InputError

Batch = dict[str, torch.Tensor]


@dataclass
class LoaderConfig:
    """The `loader` section of a training config."""
    backend: Literal["torch", "dali"] = "torch"   # torch DataLoader workers, or DALI's webdataset reader
    batch_size: int = 1024                        # events per batch
    object_cap: int = 0                           # padded slots; 0 = 16 (events) / 128 (fat jets)
    workers: int = 0                              # DataLoader worker processes (0 = main process)
    shuffle: bool = True                          # random block order + windowed event shuffle
    shuffle_buffer: int = 65_536                  # events per shuffle window
    seed: int = 0                                 # same seed + epoch -> same batches
    max_events: int = 0                           # use only the split's first K events (0 = all):
    # a fixed subset in stored order (the shard step shuffled it globally), the same every epoch
    skip_bad: bool = False                        # skip (and count) bad shards instead of failing:
    # shards are checked when the split is opened (size, index, every member's tar and block
    # header; with skip_bad also every payload: CRC, labels, events per class), so a shard with a
    # bad block is skipped whole; a member that fails later (file changed under a running job) is
    # an error naming the shard and member
    drop_last: bool = False                       # only full batches (rest counted as dropped)
    prefetch_factor: int = 4                      # batches in flight per worker
    dali_blocks_per_run: int = 4                  # DALI: blocks (tar members) per pipeline run
    dali_initial_fill: int = 32                   # DALI: reader shuffle buffer, in blocks
    prefetch_blocks: int = 4                      # shards behind a URL: blocks fetched ahead, in
    # threads of each worker (0 = each block when needed); the order of events never changes
    cache_dir: str = ""                           # shards behind a URL: a local folder keeping the
    # fetched blocks (shared safely by workers and ranks); "" = no cache
    cache_gb: float = 10.0                        # bound of cache_dir, least recently used evicted

    def __post_init__(self):
        if self.backend not in ("torch", "dali"):
            raise ValueError(f"backend must be torch or dali, got {self.backend!r}")
        for name in ("batch_size", "shuffle_buffer", "prefetch_factor", "dali_blocks_per_run",
                     "dali_initial_fill"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.workers < 0 or self.object_cap < 0 or self.max_events < 0 or self.prefetch_blocks < 0:
            raise ValueError("workers, object_cap, max_events and prefetch_blocks must be >= 0")
        if not self.cache_gb > 0:
            raise ValueError(f"cache_gb must be > 0, got {self.cache_gb}")

    def cap_for(self, kind: str) -> int:
        default = objects.DEFAULT_CAP if kind == "events" else objects.DEFAULT_CONSTITUENT_CAP
        return self.object_cap or default


class BlockReader:
    """Reads and decodes tar members by (shard, member) with pread; errors name the member."""

    def __init__(self, data: SplitData):
        self.shard_of = np.concatenate([np.full(len(s.events), i) for i, s in enumerate(data.shards)]
                                       or [np.zeros(0, np.int64)])
        self.member_of = np.concatenate([np.arange(len(s.events)) for s in data.shards]
                                        or [np.zeros(0, np.int64)])
        self.events = np.concatenate([s.events for s in data.shards] or [np.zeros(0, np.int64)])
        self.shards, self.n_classes = data.shards, data.n_classes
        self._files: dict[int, object] = {}

    def schedule(self, blocks: list[int]) -> None:
        """The blocks about to be loaded, in order: a local split reads each when asked (the page
        cache reads ahead); engine.data.loader.remote_blocks prefetches them."""

    def load(self, block_id: int) -> encoding.Block:
        shard = self.shards[self.shard_of[block_id]]
        j = self.member_of[block_id]
        f = self._files.get(self.shard_of[block_id])
        try:
            if f is None:
                f = self._files[self.shard_of[block_id]] = open(shard.path, "rb")
            f.seek(int(shard.offsets[j]))
            data = f.read(int(shard.sizes[j]))
        except OSError as exc:
            raise InputError(shard.path, f"unreadable ({exc.strerror or type(exc).__name__})") from None
        return decode_member(data, shard, j, self.n_classes)


class StreamLoader:
    """Epoch, resume and accounting logic shared by the torch and DALI backends."""

    def __init__(self, data: SplitData, cfg: LoaderConfig, rank: int, world_size: int):
        self.data, self.cfg, self.rank, self.world_size = data, cfg, rank, world_size
        self.kind, self.cap = data.kind, cfg.cap_for(data.kind)
        self.epoch, self._done, self._delivered = 0, 0, 0

    def _n_batches(self) -> int:
        raise NotImplementedError

    def _events_own(self) -> tuple[int, int]:
        """(events of this rank in the epoch, events it delivers per epoch)."""
        raise NotImplementedError

    def _batches(self, skip: int) -> Iterator[Batch]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._n_batches()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; a new epoch starts from its first batch."""
        if epoch != self.epoch:
            self.epoch, self._done, self._delivered = epoch, 0, 0

    def __iter__(self) -> Iterator[Batch]:
        if self._done >= len(self):
            self._done, self._delivered = 0, 0
        for batch in self._batches(self._done):
            self._done += 1
            self._delivered += len(batch["labels"])
            yield batch

    def state_dict(self) -> dict:
        """Position in the epoch; load it into a loader with the same config to resume."""
        return {"epoch": self.epoch, "batches_done": self._done, "events_delivered": self._delivered,
                **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise InputError("loader state", f"{key} is {state.get(key)!r}, this loader has {value!r}")
        self.epoch, self._done = int(state["epoch"]), int(state["batches_done"])
        self._delivered = int(state["events_delivered"])

    def _identity(self) -> dict:
        c = self.cfg
        return {"backend": c.backend, "seed": c.seed, "batch_size": c.batch_size, "workers": c.workers,
                "shuffle": c.shuffle, "shuffle_buffer": c.shuffle_buffer, "drop_last": c.drop_last,
                "max_events": c.max_events,
                "rank": self.rank, "world_size": self.world_size,
                "shards": [s.name for s in self.data.shards]}

    def summary(self) -> dict:
        """This rank's account of the epoch so far, against the manifest (JSON-able)."""
        own, stream = self._events_own()
        skipped = int(sum(s["events"] for s in self.data.skipped))
        return {"epoch": self.epoch, "rank": self.rank, "world_size": self.world_size,
                "backend": self.cfg.backend, "batches": len(self), "batches_delivered": self._done,
                "complete": self._done == len(self), "events_delivered": self._delivered,
                "events_rank": own, "events_repeated": max(stream - own, 0),
                "events_dropped": max(own - stream, 0), "events_manifest": self.data.events_manifest,
                "events_readable": self.data.events_readable, "events_in_skipped_shards": skipped,
                "shards": len(self.data.shards) + len(self.data.skipped),
                "shards_skipped": list(self.data.skipped)}
