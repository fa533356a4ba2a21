"""The read side of a shard folder behind a URL (s3://, root://, https://): locate a split and
check its shards at open without a request per member; read one member in one ranged request.

What differs from a local split (engine.data.shards.reader), and why: at open, a local shard's
every tar header and block header is read (a pread each, cheap on a disk); a remote one would
cost a request per member. So a remote split is checked at open from one listing of the split
folder (each shard's size) and each shard's index against the manifest (one request per
shard); a member's tar header and block header are checked when the member is read
(`read_member` fetches the tar header with the member, in the same request), before it is
decoded and checked like every block (`decode_member`). A shard modified on the server is
therefore an error naming the shard and member when that member is read, not at open. With
`skip_bad`, every shard is read whole at open (one request each) and all members checked.
"""
from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np

from engine.data import remote
from engine.data.shards.manifest import MANIFEST, TEMPORARY
from engine.data.shards.members import ShardInfo, check_headers, count_classes, parse_index
from engine.errors import InputError


def is_shard_url(url: remote.URL) -> bool:
    """Whether `url` is meant as shards: it or its parent holds a manifest, or it holds tars."""
    return (remote.exists(url / MANIFEST) or remote.exists(url.parent / MANIFEST)
            or any(name.endswith(".tar") for name in remote.listing(url)))


def locate_split(url: remote.URL, split: str | None, default: str) -> tuple[remote.URL, str]:
    """`engine.data.shards.reader.locate_split` for a URL."""
    for folder in (url, url.parent):
        if TEMPORARY.fullmatch(folder.name):
            raise InputError(folder, "is the unfinished output of a `shard` run that was stopped, "
                                     "not shards (run `python -m engine shard` again)")
    if remote.exists(url / MANIFEST):
        return url, split or default
    if url.parent != url and remote.exists(url.parent / MANIFEST) and remote.exists(url):
        if split not in (None, url.name):
            raise InputError(url, f"is the '{url.name}' split, not '{split}'")
        return url.parent, url.name
    if not remote.exists(url):
        raise InputError(url, "no such shard folder on the server")
    raise InputError(url, f"no {MANIFEST} here or in the parent folder (not a shard folder?)")


def checks(folder: remote.URL, manifest: dict):
    """(check(entry, kind, first_index) -> ShardInfo, verify(info, n_classes)) for the shards of
    split folder `folder`, sharing one listing of it."""
    files = remote.listing(folder)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]

    def check(entry: dict, kind: str, first_index: int) -> ShardInfo:
        return check_shard(folder, entry, first_index, files, digest)

    def verify(info: ShardInfo, n_classes: int) -> None:
        verify_shard(info, n_classes, manifest["kind"])

    return check, verify


def check_shard(folder: remote.URL, entry: dict, first_index: int, files: dict[str, dict],
                digest: str) -> ShardInfo:
    """Compare one remote shard's size (from the listing, else one request) and index with the
    manifest."""
    tar, idx = folder / entry["name"], folder / entry["index"]
    info = files.get(entry["name"])
    if info is None or info.get("size") is None:      # an HTTP index page lists no sizes
        info = remote.info(tar)
    if info is None:
        raise InputError(tar, "shard listed in the manifest is missing")
    if info.get("size") != entry["bytes"]:
        raise InputError(tar, f"{info.get('size')} bytes, the manifest says {entry['bytes']} "
                              "(truncated or modified)")
    offsets, sizes, names = parse_index(idx, remote.read(idx))
    events = np.asarray(entry["members"], np.int64)
    if len(offsets) != len(events):
        raise InputError(idx, f"{len(offsets)} samples, the manifest says {len(events)}")
    if len(offsets) and (offsets.min() < tarfile.BLOCKSIZE or sizes.min() < 0
                         or (offsets + sizes).max() > entry["bytes"]):
        raise InputError(tar, "the index points outside the tar")
    firsts = first_index + np.cumsum(events) - events
    return ShardInfo(entry["name"], tar, offsets, sizes, events, firsts, entry["events_per_class"],
                     names, f"{entry['bytes']}:{remote.version(info)}:{digest}")


def checked_member(info: ShardInfo, j: int, kind: str, raw: bytes) -> memoryview:
    """The member's bytes from `raw` (its tar header, then the member), after checking both
    headers against the index and the manifest; InputError naming the shard and member."""
    problem = (check_headers(raw, info.members[j], int(info.sizes[j]), kind, int(info.events[j]),
                             int(info.first_index[j]))
               if len(raw) == tarfile.BLOCKSIZE + info.sizes[j] else "member cut short (truncated shard)")
    if problem:
        raise InputError(info.path, f"member {info.members[j]}: {problem}")
    return memoryview(raw)[tarfile.BLOCKSIZE:]


def read_member(info: ShardInfo, j: int, kind: str) -> memoryview:
    """Member j of a remote shard (tar header checked), in one ranged request."""
    start = int(info.offsets[j]) - tarfile.BLOCKSIZE
    raw = remote.read(info.path, start, int(info.offsets[j] + info.sizes[j]))
    return checked_member(info, j, kind, raw)


def verify_shard(info: ShardInfo, n_classes: int, kind: str) -> None:
    """`engine.data.shards.reader.verify_shard` for a remote shard: read whole, in one request."""
    data = remote.read(info.path)

    def member(j: int) -> bytes:
        start = int(info.offsets[j]) - tarfile.BLOCKSIZE
        return checked_member(info, j, kind, data[start:int(info.offsets[j] + info.sizes[j])])

    count_classes(info, n_classes, member)
