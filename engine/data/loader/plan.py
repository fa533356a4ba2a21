"""The epoch plan: which events each rank and worker reads, as pure arithmetic on block sizes.

No files and no tensors: the backends turn a plan into reads (see engine.data.loader for the
epoch semantics it implements).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.loader.base import LoaderConfig


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
    """The epoch's block order and this rank's share (see engine.data.loader)."""
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


def dali_shard_events(block_events: np.ndarray, world: int) -> np.ndarray:
    """Events in each of DALI's `world` shards of the blocks (DALI's floor split by count)."""
    n = len(block_events)
    cum = np.concatenate([[0], np.cumsum(block_events)])
    bounds = [s * n // world for s in range(world + 1)]
    return np.array([cum[bounds[s + 1]] - cum[bounds[s]] for s in range(world)], np.int64)


def dali_shard_blocks(n_blocks: int, world: int, shard: int) -> int:
    return (shard + 1) * n_blocks // world - shard * n_blocks // world
