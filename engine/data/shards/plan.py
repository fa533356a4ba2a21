"""The order and the splits of `shard`, from a 64-bit seeded key per event (pure functions).

Every event's key is a splitmix64 hash of (seed, label, run, lumi, event); ties (the same event
twice) are broken by (input file ordinal, row in file). The written order of every split is the
order by key: a seeded random permutation that mixes the classes, the same however the inputs are
chunked. Buckets are ranges of the key (its top `bits` bits), so the buckets in turn, each sorted
by key, are the global order, and each bucket can be written on its own.

Splits are stratified per class from the counts of events per (class, bucket) alone: per class, in
key order, `balance` keeps the first `smallest` events (the smallest class with events); the
first round(train * n) go to train, the next round(val * n) to val, the rest to test. So the events
of every (split, bucket), and every bucket's first index in each split, are known before any
bucket is written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.data.shards.manifest import SPLITS

MAX_BUCKET_BITS = 16
_MASK = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def event_keys(seed: int, labels: np.ndarray, run: np.ndarray, lumi: np.ndarray,
               event: np.ndarray) -> np.ndarray:
    """(n,) uint64 key of each event: splitmix64 chained over seed, label, run, lumi, event."""
    key = np.full(len(labels), _splitmix64(np.array([seed & _MASK], np.uint64))[0], np.uint64)
    with np.errstate(over="ignore"):
        for column in (labels, run, lumi, event):
            key = _splitmix64(key ^ np.asarray(column).astype(np.int64).view(np.uint64))
    return key


def bucket_bits(rows: int, arrow_bytes: int, bucket_bytes: float, max_bucket_events: int | None) -> int:
    """log2 of the number of buckets: the fewest such that a bucket holds about `bucket_bytes`
    decoded bytes (and at most `max_bucket_events` events, if given), capped at MAX_BUCKET_BITS."""
    need = max(arrow_bytes / bucket_bytes, rows / max_bucket_events if max_bucket_events else 1.0, 1.0)
    return min(MAX_BUCKET_BITS, math.ceil(math.log2(need)))


def buckets_of(keys: np.ndarray, bits: int) -> np.ndarray:
    """(n,) int64 bucket of each key: its top `bits` bits."""
    if bits == 0:
        return np.zeros(len(keys), np.int64)
    return (keys >> np.uint64(64 - bits)).astype(np.int64)


def sort_order(keys: np.ndarray, files: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Indices that sort events by (key, file ordinal, row in file)."""
    return np.lexsort((rows, files, keys))


@dataclass(frozen=True)
class SplitPlan:
    """Who goes where, from the events per class and bucket."""
    cuts: np.ndarray           # (C, 4) class ranks where train, val, test, dropped begin ([0, ...])
    class_start: np.ndarray    # (C, B) class rank of each bucket's first event of the class
    split_counts: np.ndarray   # (3, B) events of each split in each bucket
    split_start: np.ndarray    # (3, B) split-wide index of each bucket's first event of the split

    @property
    def per_class(self) -> np.ndarray:
        """(3, C) events of each split per class."""
        return np.diff(self.cuts, axis=1).T


def plan_splits(counts: np.ndarray, fractions: tuple[float, float, float], balance: bool) -> SplitPlan:
    """The split plan of `counts` ((C, B) events per class and bucket; see the module docstring)."""
    counts = np.asarray(counts, np.int64)
    totals = counts.sum(axis=1)
    kept = totals
    if balance:
        kept = np.minimum(totals, min((int(n) for n in totals if n), default=0))
    cuts = np.zeros((len(totals), 4), np.int64)
    for c, n in enumerate(kept.tolist()):
        n_train = int(round(fractions[0] * n))
        n_val = min(int(round(fractions[1] * n)), n - n_train)
        cuts[c] = (0, n_train, n_train + n_val, n)
    class_start = np.cumsum(counts, axis=1) - counts
    ends = class_start + counts
    split_counts = np.zeros((len(SPLITS), counts.shape[1]), np.int64)
    for s in range(len(SPLITS)):
        lo, hi = cuts[:, s:s + 1], cuts[:, s + 1:s + 2]
        split_counts[s] = np.clip(np.minimum(ends, hi) - np.maximum(class_start, lo), 0, None).sum(axis=0)
    split_start = np.cumsum(split_counts, axis=1) - split_counts
    return SplitPlan(cuts, class_start, split_counts, split_start)


def assign_splits(labels: np.ndarray, class_start: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(n,) split code (index into SPLITS, or 3 for an event `balance` leaves out) of one bucket's
    events in key order.

    `labels` (n,) of the bucket's events sorted by key; `class_start` (C,) the class rank of the
    bucket's first event of each class; `cuts` (C, 4) as in SplitPlan.
    """
    labels = np.asarray(labels, np.int64)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, np.arange(len(class_start)))
    ranks = np.empty(len(labels), np.int64)
    ranks[order] = class_start[sorted_labels] + np.arange(len(labels)) - first[sorted_labels]
    codes = np.zeros(len(labels), np.int64)
    for boundary in range(1, 4):
        codes += ranks >= cuts[labels, boundary]
    return codes
