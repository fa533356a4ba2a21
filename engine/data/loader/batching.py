"""Batching: events from a stream of block segments -> fixed-shape padded batches, shuffled in
windows, handed over from workers through reused shared-memory buffers.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from engine.data.loader.base import Batch, LoaderConfig
from engine.data.shards import encoding


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
