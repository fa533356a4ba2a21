"""The streaming loader: shards -> fixed-shape padded batches, split exactly over ranks and workers.

It reads shards through engine.data.shards and knows nothing of models or training: `plan` is the
epoch arithmetic, `batching` pads and shuffles, `base` holds the config and the shared loader
logic, and one module per backend (torch, dali) reads the blocks.

    loader = make_loader("shards/train", LoaderConfig(batch_size=1024), rank, world_size)
    for epoch in range(start, epochs):
        loader.set_epoch(epoch)
        for batch in loader:            # dict of torch tensors, pinned when CUDA is available
            x = batch["features"].to(device, non_blocking=True)

Batches (engine.data.objects layout): events: types (B, N) int8, features (B, N, 6) float32,
counts (B,) int32, labels (B,) int64; fat jets: constituents (B, M, 5) float32, counts (B,) int32,
fatjet (B, 4) float32 [pt, eta, phi, mass], msoftdrop (B,) float32 (NaN where the inputs did not
record it), parton (B,) int32, labels (B,) int64. Both also carry weights (B,) float32 and index
(B,) int64, the event's index in its split (unique; used to check that nothing is lost or repeated).

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

from engine.data import shards
from engine.data.loader.base import LoaderConfig, StreamLoader
from engine.data.loader.dali_backend import DaliLoader
from engine.data.loader.torch_backend import TorchLoader

BACKENDS: dict[str, type[StreamLoader]] = {"torch": TorchLoader, "dali": DaliLoader}

__all__ = ["BACKENDS", "LoaderConfig", "make_loader"]


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
    return BACKENDS[cfg.backend](data, cfg, rank, world_size)
