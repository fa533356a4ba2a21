"""The torch backend (`loader.backend: torch`): DataLoader workers read the blocks with pread
(or, behind a URL, with ranged requests: engine.data.loader.remote_blocks).

With workers, the DataLoader and its processes persist across epochs; each worker hands its
batches over through a reused shared-memory ring (engine.data.loader.batching.SharedRing).
"""
from __future__ import annotations

from typing import Iterator

import torch

from engine.data.loader.base import Batch, BlockReader, LoaderConfig, StreamLoader
from engine.data.loader.batching import SharedRing, window_batches
from engine.data.loader.plan import RankPlan, rank_plan, stream_segments, worker_share
from engine.data.loader.remote_blocks import block_reader
from engine.data.shards import encoding
from engine.data.shards.reader import SplitData
from engine.errors import InputError


class TorchLoader(StreamLoader):
    """PyTorch backend: a DataLoader over `_EpochStream`, pinned when CUDA is available.

    With workers, the DataLoader and its worker processes persist across epochs (starting them
    costs more than a small epoch); the epoch and resume point reach them through shared memory.
    """

    def __init__(self, data: SplitData, cfg: LoaderConfig, rank: int, world_size: int):
        super().__init__(data, cfg, rank, world_size)
        self.reader = block_reader(data, cfg)
        self.stream = _EpochStream(self)
        self._loader = None

    def _plan(self) -> RankPlan:
        return rank_plan(self.reader.events, self.cfg, self.epoch, self.rank, self.world_size)

    def _n_batches(self) -> int:
        return self._plan().n_batches

    def _events_own(self) -> tuple[int, int]:
        plan = self._plan()
        return plan.stop - plan.start, plan.stream

    def _batches(self, skip: int) -> Iterator[Batch]:
        workers, pin = self.cfg.workers, torch.cuda.is_available()
        self.stream.control[:] = torch.tensor([self.epoch, skip])
        # the DataLoaders get their own generator: making an iterator draws a seed, never from the
        # global one (a resumed run would otherwise see a different global random stream)
        if not workers:
            loader = torch.utils.data.DataLoader(self.stream, batch_size=None, pin_memory=pin,
                                                 generator=torch.Generator())
            yield from loader
            return
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.stream, batch_size=None, num_workers=workers, persistent_workers=True,
                prefetch_factor=self.cfg.prefetch_factor, generator=torch.Generator())
        for ticket in self._loader:       # the batch waits in a worker's shared ring (SharedRing)
            if "error" in ticket:         # a worker's InputError, raised here as one line
                raise InputError(*ticket["error"])
            batch = self.stream.rings[ticket["ring"]].get(ticket)
            # numpy's copy: torch's clone is a multi-threaded copy, far slower at this size
            yield {k: t.pin_memory() if pin else torch.from_numpy(t.numpy().copy())
                   for k, t in batch.items()}


class _EpochStream(torch.utils.data.IterableDataset):
    """One rank's epoch. DataLoader worker i yields the batches of logical worker
    (i + skip) % workers, so that PyTorch's round-robin order is the planned batch order."""

    def __init__(self, owner: TorchLoader):
        self.reader, self.cfg, self.rank, self.world = owner.reader, owner.cfg, owner.rank, owner.world_size
        self.kind, self.cap = owner.kind, owner.cap
        self.control = torch.zeros(2, dtype=torch.int64).share_memory_()     # epoch, skip
        shapes = encoding.batch_shapes(self.kind, self.cfg.batch_size, self.cap)
        self.rings = [SharedRing(i, shapes, self.cfg.prefetch_factor + 4)
                      for i in range(self.cfg.workers)]

    def __iter__(self) -> Iterator[Batch]:
        epoch, skip = self.control.tolist()
        plan = rank_plan(self.reader.events, self.cfg, epoch, self.rank, self.world)
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info else 1
        worker = ((info.id if info else 0) + skip) % workers
        first, count, _ = worker_share(plan, worker, workers)
        ring = None if info is None else self.rings[info.id]
        pieces = stream_segments(plan, first, count)
        self.reader.schedule([block for block, _, _ in pieces])
        segments = ((_Load(self.reader, block), lo, hi) for block, lo, hi in pieces)
        batches = window_batches(segments, count, self.kind, self.cap, self.cfg,
                                 [self.cfg.seed, epoch, self.rank, worker],
                                 len(range(worker, skip, workers)), ring)
        if info is None:
            yield from batches
            return
        try:                  # PyTorch would re-raise it as a RuntimeError holding a traceback
            yield from batches
        except InputError as exc:
            yield {"error": (exc.source, exc.problem)}


class _Load:
    def __init__(self, reader: BlockReader, block: int):
        self.reader, self.block = reader, block

    def __call__(self) -> encoding.Block:
        return self.reader.load(self.block)
