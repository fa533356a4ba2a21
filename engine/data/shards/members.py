"""What a shard reader needs on both sides of the storage (a local folder, a URL): the checked
shards of a split (`ShardInfo`, `SplitData`), index parsing, the tar and block header checks of a
member, and the decoding of a member against the manifest (`decode_member`).
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.data import remote
from engine.data.shards import encoding
from engine.data.shards.manifest import MEMBER_EXT
from engine.errors import InputError


@dataclass
class ShardInfo:
    """One readable shard: its tar members (arrays of length n_members)."""
    name: str
    path: Path | remote.URL
    offsets: np.ndarray         # int64 data offset of each member in the tar
    sizes: np.ndarray           # int64 bytes of each member
    events: np.ndarray          # int64 events in each member
    first_index: np.ndarray     # int64 split-wide index of each member's first event
    events_per_class: list[int]
    members: list[str] = field(default_factory=list)     # member names, from the index
    version: str = ""           # remote shards: size, ETag or mtime, and the manifest's digest


@dataclass
class SplitData:
    """A split of a shard folder: the shards that passed the checks and those skipped."""
    root: Path | remote.URL
    split: str
    manifest: dict
    shards: list[ShardInfo]
    skipped: list[dict]         # {"name", "path", "reason", "events"}

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def n_classes(self) -> int:
        return len(self.manifest["class_names"])

    @property
    def events_manifest(self) -> int:
        return int(self.manifest["splits"][self.split]["events"])

    @property
    def events_readable(self) -> int:
        return int(sum(s.events.sum() for s in self.shards))


def decode_member(data: bytes, info: ShardInfo, j: int, n_classes: int) -> encoding.Block:
    """Decode the bytes of member j of a checked shard and check them against the manifest
    (events, first index, labels in 0..n_classes-1); InputError naming the shard and member."""
    try:
        if len(data) != info.sizes[j]:
            raise encoding.BlockError("member cut short (truncated shard)")
        block = encoding.decode(data)
        labels = block.columns["labels"]
        if block.n_events != info.events[j] or block.first_index != info.first_index[j]:
            raise encoding.BlockError("block is not where the manifest says")
        if len(labels) and int(labels.max()) >= n_classes:
            raise encoding.BlockError(f"label {int(labels.max())} outside the manifest's "
                                      f"{n_classes} classes")
    except encoding.BlockError as exc:
        raise InputError(info.path, f"member {info.members[j]}: {exc}") from None
    return block


def count_classes(info: ShardInfo, n_classes: int, member) -> None:
    """Decode every member (`member(j)`: its bytes) and compare the labels with the manifest's
    events per class; InputError naming the shard (or the member of a bad block)."""
    per_class = np.zeros(n_classes, np.int64)
    for j in range(len(info.offsets)):
        block = decode_member(member(j), info, j, n_classes)
        per_class += np.bincount(block.columns["labels"], minlength=n_classes)
    if per_class.tolist() != list(info.events_per_class):
        raise InputError(info.path, f"events per class {per_class.tolist()}, the manifest says "
                                    f"{list(info.events_per_class)}")


def parse_index(idx: Path | remote.URL, raw: bytes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Offsets, sizes and member names from the bytes of index file `idx` (DALI's wds2idx)."""
    try:
        lines = raw.decode().splitlines()
        version, count = lines[0].split()
        rows = [line.split() for line in lines[1:] if line.strip()]
        if (version != "v1.2" or int(count) != len(rows)
                or any(len(r) != 4 or r[0] != MEMBER_EXT for r in rows)):
            raise ValueError
        offsets = np.array([int(r[1]) for r in rows], np.int64)
        sizes = np.array([int(r[2]) for r in rows], np.int64)
        return offsets, sizes, [r[3] for r in rows]
    except (ValueError, IndexError, OverflowError):
        raise InputError(idx, "not a valid index file (expected DALI wds2idx v1.2)") from None


def _tar_size(header: bytes) -> int | None:
    try:
        return int(header[124:136].rstrip(b"\0 ").decode("ascii") or "0", 8)
    except ValueError:
        return None


def check_headers(raw: bytes, name: str, size: int, kind: str, events: int, first: int) -> str | None:
    """The problem with a member's tar header and block header (`raw`: the 512-byte tar header,
    then at least the block header), or None."""
    header, head = raw[:tarfile.BLOCKSIZE], raw[tarfile.BLOCKSIZE:]
    if header[:100].rstrip(b"\0").decode(errors="replace") != name:
        return "tar header does not match the index"
    if _tar_size(header) != size:
        return "tar header size does not match the index"
    try:
        block = encoding.read_header(head)
    except encoding.BlockError as exc:
        return str(exc)
    if block.kind != kind or block.n_events != events or block.first_index != first:
        return "block header does not match the manifest"
    return None
