"""The streaming loader: shards -> fixed-shape padded batches, split exactly over ranks and workers.

    loader = make_loader("shards/train", LoaderConfig(batch_size=1024), rank, world_size)
    for epoch in range(start, epochs):
        loader.set_epoch(epoch)
        for batch in loader:            # dict of torch tensors, pinned when CUDA is available
            x = batch["features"].to(device, non_blocking=True)

Batches (engine.data.objects layout): events: types (B, N) int8, features (B, N, 6) float32,
counts (B,) int32, labels (B,) int64; fat jets: constituents (B, M, 5) float32, counts (B,) int32,
fatjet (B, 4) float32, labels (B,) int64. Both also carry weights (B,) float32 and index (B,) int64,
the event's index in its split (unique; used to check that nothing is lost or repeated).

Epoch semantics (torch backend):
- Blocks (tar members) are put in a seeded random order per epoch (`set_epoch`), the same on every
  rank; their events form one sequence that is cut into `world_size` contiguous ranges differing
  by at most one event. Splitting is at event level, so any number of ranks works with few shards.
- Every rank gets the same number of batches, ceil(ceil(T / world) / batch_size): a rank one event
  short repeats its first event once (counted: `events_repeated` in `summary()`). With
  `drop_last`, every rank gets floor(floor(T / world) / batch_size) full batches and the rest is
  counted as `events_dropped`.
- Within a rank, batch j comes from DataLoader worker j % workers (PyTorch's round-robin order);
  each worker reads a contiguous part of the rank's range.
- Shuffle buffer: each worker's events are permuted within consecutive windows of
  `shuffle_buffer` events (rounded to whole batches), so a window mixes many blocks of many shards.
  Resuming from `state_dict()` skips whole windows without reading them.
- With workers, the DataLoader and its processes persist across epochs; a worker hands each batch
  over through a reused shared-memory buffer and the main process copies it out at once (into
  pinned memory with CUDA), so every batch the caller gets is its own.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from engine.data import encoding, objects, shards
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

    def __post_init__(self):
        if self.backend not in ("torch", "dali"):
            raise ValueError(f"backend must be torch or dali, got {self.backend!r}")
        for name in ("batch_size", "shuffle_buffer", "prefetch_factor", "dali_blocks_per_run",
                     "dali_initial_fill"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.workers < 0 or self.object_cap < 0 or self.max_events < 0:
            raise ValueError("workers, object_cap and max_events must be >= 0")

    def cap_for(self, kind: str) -> int:
        default = objects.DEFAULT_CAP if kind == "events" else objects.DEFAULT_CONSTITUENT_CAP
        return self.object_cap or default


@dataclass
class RankPlan:
    """Which events one rank reads in one epoch (positions in the epoch's block sequence)."""
    order: np.ndarray        # block ids in epoch order
    cum: np.ndarray          # (n_blocks + 1,) event offsets of the ordered blocks
    start: int               # the rank's events are [start, stop) of the sequence
    stop: int
    stream: int              # events the rank delivers (its events, + repeats, - dropped)
    n_batches: int
    batch_size: int


def limit_events(block_events: np.ndarray, max_events: int) -> np.ndarray:
    """Events per block when only the first `max_events` of the split (stored order) are used:
    later blocks get 0, the block at the boundary keeps its first events. 0 means no limit."""
    if max_events <= 0:
        return block_events
    before = np.cumsum(block_events) - block_events
    return np.clip(max_events - before, 0, block_events).astype(block_events.dtype)


def rank_plan(block_events: np.ndarray, cfg: LoaderConfig, epoch: int, rank: int,
              world: int) -> RankPlan:
    """The epoch's block order and this rank's share (see module docstring)."""
    block_events = limit_events(block_events, cfg.max_events)
    n = len(block_events)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n) if cfg.shuffle else np.arange(n)
    cum = np.zeros(n + 1, np.int64)
    np.cumsum(block_events[order], out=cum[1:])
    total, b = int(cum[-1]), cfg.batch_size
    start, stop = rank * total // world, (rank + 1) * total // world
    if cfg.drop_last:
        n_batches = (total // world) // b
        stream = n_batches * b
    else:
        stream = -(-total // world)
        n_batches = -(-stream // b)
    return RankPlan(order, cum, start, stop, stream, n_batches, batch_size=b)


def worker_share(plan: RankPlan, worker: int, workers: int) -> tuple[int, int, int]:
    """(first stream position, events, batches) of one worker: batches worker, worker + workers, ..."""
    b = plan.batch_size

    def size(w: int) -> int:
        count = len(range(w, plan.n_batches, workers))
        short = plan.n_batches * b - plan.stream if (plan.n_batches - 1) % workers == w else 0
        return count * b - (short if count else 0)

    first = sum(size(w) for w in range(worker))
    return first, size(worker), len(range(worker, plan.n_batches, workers))


def stream_segments(plan: RankPlan, first: int, count: int) -> list[tuple[int, int, int]]:
    """(block id, lo, hi) pieces of stream positions [first, first + count) of a rank."""
    own = plan.stop - plan.start
    out = _range_segments(plan, plan.start + first, plan.start + min(first + count, own))
    for p in range(max(first, own), first + count):              # repeats (at most one per rank)
        g = plan.start + (p - own) % own if own else (p - own) % int(plan.cum[-1])
        out += _range_segments(plan, g, g + 1)
    return out


def _range_segments(plan: RankPlan, lo: int, hi: int) -> list[tuple[int, int, int]]:
    if hi <= lo:
        return []
    i0 = int(np.searchsorted(plan.cum, lo, "right")) - 1
    i1 = int(np.searchsorted(plan.cum, hi, "left"))
    return [(int(plan.order[i]), max(lo, int(plan.cum[i])) - int(plan.cum[i]),
             min(hi, int(plan.cum[i + 1])) - int(plan.cum[i])) for i in range(i0, i1)]


Segment = tuple[Callable[[], encoding.Block], int, int]


def window_batches(segments: Iterator[Segment], n_events: int, kind: str, cap: int,
                   cfg: LoaderConfig, rng_key: list[int], skip: int = 0,
                   ring: "SharedRing | None" = None) -> Iterator[Batch]:
    """Padded batches of `n_events` events taken in order from `segments`, shuffled per window.

    Window k holds events [k W, (k + 1) W) (W = shuffle_buffer rounded to batches), permuted with
    the generator seeded by rng_key + [k]. The first `skip` batches are not produced; windows
    before the resume point are passed over without loading their blocks.
    """
    b = cfg.batch_size
    window = max(1, cfg.shuffle_buffer // b) * b if cfg.shuffle else b
    cursor = _Cursor(segments)
    for k, at in enumerate(range(0, n_events, window)):
        size = min(window, n_events - at)
        if at + size <= skip * b:
            cursor.take(size, load=False)
            continue
        rows = (np.random.default_rng(rng_key + [k]).permutation(size) if cfg.shuffle
                else np.arange(size))
        # numpy's calloc is much cheaper than torch.zeros here; the tensors share the memory
        arrays = {key: np.zeros(shape, dt) for key, (shape, dt) in
                  encoding.batch_shapes(kind, size, cap).items()}
        tensors = {key: torch.from_numpy(a) for key, a in arrays.items()}
        pos = 0
        for block, lo, hi in cursor.take(size):
            encoding.pad_into(block, lo, hi, arrays, rows[pos:pos + hi - lo])
            pos += hi - lo
        for a in range(max(0, skip * b - at), size, b):
            if ring is None:
                yield {key: t[a:a + b] for key, t in tensors.items()}
            else:
                yield ring.put({key: x[a:a + b] for key, x in arrays.items()})


class SharedRing:
    """Batch buffers in shared memory, made before the workers start and reused in turn.

    A worker copies each batch into its next buffer and sends only a ticket (ring, slot, rows); the main
    process copies the batch out at once (into pinned memory with CUDA). This avoids a new
    shared-memory segment per batch (page faults, file-descriptor passing), which costs more than
    making the batch. PyTorch keeps at most `prefetch_factor` tasks per worker in flight and issues
    the next one only after handing out a batch, so a buffer is rewritten only after its batch
    was copied out (slots = prefetch_factor + 4 leaves a margin).
    """

    def __init__(self, ring_id: int, shapes: dict, slots: int):
        self.ring_id = ring_id
        self.buffers = [{key: torch.from_numpy(np.zeros(shape, dt)).share_memory_()
                         for key, (shape, dt) in shapes.items()} for _ in range(slots)]
        self.turn = 0

    def put(self, arrays: dict[str, np.ndarray]) -> dict[str, int]:
        """Copy a batch into the next buffer (in the worker); returns its ticket."""
        slot = self.turn % len(self.buffers)
        self.turn += 1
        for key, value in arrays.items():
            self.buffers[slot][key].numpy()[:len(value)] = value
        return {"ring": self.ring_id, "slot": slot, "rows": len(arrays["labels"])}

    def get(self, ticket: dict[str, int]) -> Batch:
        """The batch of a ticket, as views of the shared buffer (in the main process)."""
        return {key: t[:ticket["rows"]] for key, t in self.buffers[ticket["slot"]].items()}


class _Cursor:
    """Takes events from a segment stream; each block is loaded once, only when needed."""

    def __init__(self, segments: Iterator[Segment]):
        self._segments = iter(segments)
        self._load, self._lo, self._hi, self._block = None, 0, 0, None

    def take(self, n: int, load: bool = True) -> list[tuple[encoding.Block | None, int, int]]:
        out = []
        while n > 0:
            if self._lo == self._hi:
                self._load, self._lo, self._hi = next(self._segments)
                self._block = None
            k = min(n, self._hi - self._lo)
            if load and self._block is None:
                self._block = self._load()
            out.append((self._block, self._lo, self._lo + k))
            self._lo += k
            n -= k
        return out


class BlockReader:
    """Reads and decodes tar members by (shard, member) with pread; errors name the member."""

    def __init__(self, data: shards.SplitData):
        self.shard_of = np.concatenate([np.full(len(s.events), i) for i, s in enumerate(data.shards)]
                                       or [np.zeros(0, np.int64)])
        self.member_of = np.concatenate([np.arange(len(s.events)) for s in data.shards]
                                        or [np.zeros(0, np.int64)])
        self.events = np.concatenate([s.events for s in data.shards] or [np.zeros(0, np.int64)])
        self.shards, self.n_classes = data.shards, data.n_classes
        self._files: dict[int, object] = {}

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
        return shards.decode_member(data, shard, j, self.n_classes)


def make_loader(path, cfg: LoaderConfig | None = None, rank: int = 0, world_size: int = 1,
                split: str | None = None):
    """A loader over one split: `path` is a shard root (+ `split`, default train) or a split folder.

    Returns an iterable of batches with __len__ (batches per epoch, equal on all ranks),
    set_epoch(e), state_dict(), load_state_dict(d) and summary().
    """
    cfg = cfg or LoaderConfig()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    data = shards.open_split(path, split, skip_bad=cfg.skip_bad)
    for bad in data.skipped:
        warnings.warn(f"skipping shard {data.split}/{bad['name']} ({bad['events']} events): "
                      f"{bad['reason']}", stacklevel=2)
    if cfg.backend == "dali":
        from engine.data.dali_loader import DaliLoader
        return DaliLoader(data, cfg, rank, world_size)
    return TorchLoader(data, cfg, rank, world_size)


class StreamLoader:
    """Epoch, resume and accounting logic shared by the torch and DALI backends."""

    def __init__(self, data: shards.SplitData, cfg: LoaderConfig, rank: int, world_size: int):
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


class TorchLoader(StreamLoader):
    """PyTorch backend: a DataLoader over `_EpochStream`, pinned when CUDA is available.

    With workers, the DataLoader and its worker processes persist across epochs (starting them
    costs more than a small epoch); the epoch and resume point reach them through shared memory.
    """

    def __init__(self, data: shards.SplitData, cfg: LoaderConfig, rank: int, world_size: int):
        super().__init__(data, cfg, rank, world_size)
        self.reader = BlockReader(data)
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
        segments = ((_Load(self.reader, block), lo, hi)
                    for block, lo, hi in stream_segments(plan, first, count))
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
