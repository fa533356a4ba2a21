"""The read side of a shard folder: locate a split, check its shards against the manifest and
the indices, decode members, read the event identity.

`open_split` validates the manifest (engine.data.shards.manifest), then checks each shard's size,
index, tar headers and block headers against it; with `skip_bad` it also decodes every member
(CRC, labels within the classes, events per class) and skips a bad shard whole. `decode_member`
applies the same block checks wherever a block is read later.

A split behind a URL (s3://, root://, https://) is read through engine.data.shards.remote_split,
which checks at open only what costs no request per member (see there); local paths keep pread.
"""
from __future__ import annotations

import json
import os
import tarfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.data import remote
from engine.data.canonical import schema
from engine.data.shards import encoding, remote_split
from engine.data.shards.manifest import (IDENTITY_COLUMNS, MANIFEST, SHARD_FORMAT,
                                         SHARD_FORMAT_VERSION, TEMPORARY, validate_manifest)
from engine.data.shards.members import (ShardInfo, SplitData, check_headers, count_classes,
                                        decode_member, parse_index)
from engine.errors import InputError

__all__ = ["ShardInfo", "SplitData", "check_shard", "decode_member", "is_shard_path", "load_manifest",
           "locate_split", "open_split", "read_identity", "read_index", "verify_shard"]


def is_shard_path(path: str | Path) -> bool:
    """Whether `path` is meant as shards: a shard root or a split folder of one, a folder of tars
    (that lost its manifest), or the unfinished output of a killed `shard` run."""
    if remote.is_url(path):
        return remote_split.is_shard_url(remote.location(path))
    path = Path(path)
    return path.is_dir() and ((path / MANIFEST).is_file() or (path.parent / MANIFEST).is_file()
                              or any(TEMPORARY.fullmatch(p.name) for p in (path, path.parent))
                              or next(path.glob("*.tar"), None) is not None)


def locate_split(path: str | Path, split: str | None = None, default: str = "train") -> tuple[Path, str]:
    """(shard root, split name) of a shard root (+ `split`, else `default`) or of one split folder
    (whose own name `split`, if given, must be); InputError for anything else, naming the fix."""
    if remote.is_url(path):
        return remote_split.locate_split(remote.location(path), split, default)
    path = Path(path)
    for folder in (path, path.parent):
        if TEMPORARY.fullmatch(folder.name) and folder.is_dir():
            raise InputError(folder, "is the unfinished output of a `shard` run that was stopped, "
                                     "not shards (run `python -m engine shard` again)")
    if (path / MANIFEST).is_file():
        return path, split or default
    if (path.parent / MANIFEST).is_file() and path.is_dir():
        if split not in (None, path.name):
            raise InputError(path, f"is the '{path.name}' split, not '{split}'")
        return path.parent, path.name
    if not path.exists():
        raise InputError(path, "no such shard folder")
    if _holds_parquet(path):
        raise InputError(path, "holds Parquet files, not shards: run `python -m engine shard` first "
                               f"(`--input {path} --out SHARDS`, then pass SHARDS)")
    raise InputError(path, f"no {MANIFEST} here or in the parent folder (not a shard folder?)")


def _holds_parquet(path: Path) -> bool:
    """A Parquet file, or a folder with Parquet files and no shards (a shard folder that lost its
    manifest holds tars beside its Parquet sidecars)."""
    if path.is_file():
        return path.suffix == ".parquet"
    return next(path.rglob("*.parquet"), None) is not None and next(path.rglob("*.tar"), None) is None


def load_manifest(path: str | Path) -> dict:
    """The manifest of the shard folder at `path` (a root or a split folder), fully validated."""
    root, _ = locate_split(path)
    source = root / MANIFEST
    try:
        manifest = json.loads(remote.read(source) if isinstance(source, remote.URL)
                              else source.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(source, f"unreadable manifest ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise InputError(source, f"not a {SHARD_FORMAT} manifest")
    for key, want in (("format_version", SHARD_FORMAT_VERSION),
                      ("block_format_version", encoding.FORMAT_VERSION),
                      ("schema_version", schema.SCHEMA_VERSION)):
        if manifest.get(key) != want:
            older = isinstance(manifest.get(key), int) and manifest[key] < want
            raise InputError(source, f"{key} {manifest.get(key)} (this engine reads {want}"
                                     + ("; rebuild the shards from their Parquet files with "
                                        "`python -m engine shard`)" if older else ")"))
    validate_manifest(manifest, source)
    return manifest


def open_split(path: str | Path, split: str | None = None, skip_bad: bool = False) -> SplitData:
    """Check every shard of a split; a bad shard is an InputError, or skipped with `skip_bad`.

    Every shard's size, index, tar headers and block headers are checked. With `skip_bad`, every
    member is also decoded and checked (payload CRC, labels, events per class), so that a shard
    with a bad block is skipped whole before the epoch is planned, identically on every rank.
    A split behind a URL is checked without a request per member: sizes from one listing of
    the split folder and each index against the manifest at open, the tar and block headers of a
    member when it is read (engine.data.shards.remote_split).
    """
    root, split = locate_split(path, split)
    manifest = load_manifest(root)
    if split not in manifest["splits"]:
        raise InputError(root, f"no split '{split}' (has {', '.join(manifest['splits'])})")
    if isinstance(root, remote.URL):
        check, verify = remote_split.checks(root / split, manifest)
    else:
        check, verify = partial(check_shard, root / split), verify_shard
    shards, skipped, first = [], [], 0
    for entry in manifest["splits"][split]["shards"]:
        try:
            info = check(entry, manifest["kind"], first)
            if skip_bad:
                verify(info, len(manifest["class_names"]))
            shards.append(info)
        except InputError as exc:
            if not skip_bad:
                raise
            skipped.append({"name": entry["name"], "path": exc.source, "reason": exc.problem,
                            "events": entry["events"]})
        first += entry["events"]
    return SplitData(root, split, manifest, shards, skipped)


def check_shard(folder: Path, entry: dict, kind: str, first_index: int) -> ShardInfo:
    """Compare one shard's tar and index with the manifest; InputError naming the file if bad."""
    tar, idx = folder / entry["name"], folder / entry["index"]
    if not tar.is_file():
        raise InputError(tar, "shard listed in the manifest is missing")
    if tar.stat().st_size != entry["bytes"]:
        raise InputError(tar, f"{tar.stat().st_size} bytes, the manifest says {entry['bytes']} "
                              "(truncated or modified)")
    offsets, sizes, names = read_index(idx)
    events = np.asarray(entry["members"], np.int64)
    if len(offsets) != len(events):
        raise InputError(idx, f"{len(offsets)} samples, the manifest says {len(events)}")
    firsts = first_index + np.cumsum(events) - events
    with _readable(tar) as f:
        for j in range(len(offsets)):
            problem = _check_member(f.fileno(), offsets[j], sizes[j], names[j], kind,
                                    events[j], firsts[j], entry["bytes"])
            if problem:
                raise InputError(tar, f"member {names[j]}: {problem}")
    return ShardInfo(entry["name"], tar, offsets, sizes, events, firsts, entry["events_per_class"],
                     names)


def verify_shard(info: ShardInfo, n_classes: int) -> None:
    """Decode every member of a checked shard; InputError naming the member of the first bad one,
    or the shard if its labels disagree with the manifest's events per class."""
    with _readable(info.path) as f:
        count_classes(info, n_classes,
                      lambda j: os.pread(f.fileno(), int(info.sizes[j]), int(info.offsets[j])))


@contextmanager
def _readable(path: Path):
    """The file opened for reading; an OSError (permissions, I/O) becomes an InputError naming it."""
    try:
        with open(path, "rb") as f:
            yield f
    except OSError as exc:
        raise InputError(path, f"unreadable ({exc.strerror or exc.__class__.__name__})") from None


def read_index(idx: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Offsets, sizes and member names from a DALI wds2idx index file (one 'blk' component)."""
    if not idx.is_file():
        raise InputError(idx, "index file is missing (re-run `shard`, or DALI's wds2idx)")
    try:
        return parse_index(idx, idx.read_bytes())
    except OSError as exc:
        raise InputError(idx, f"unreadable ({exc.strerror or exc.__class__.__name__})") from None


def _check_member(fd: int, offset: int, size: int, name: str, kind: str, events: int,
                  first: int, file_bytes: int) -> str | None:
    if offset < tarfile.BLOCKSIZE or size < 0 or offset + size > file_bytes:
        return "index points outside the tar"
    raw = os.pread(fd, tarfile.BLOCKSIZE + encoding.HEADER.size, offset - tarfile.BLOCKSIZE)
    return check_headers(raw, name, size, kind, events, first)


def read_identity(root: str | Path, split: str) -> dict[str, np.ndarray] | None:
    """index, run, lumi, event ((E,) int64 each, sorted by index) of a split's events, from the
    split's identity.parquet; None for shards written before splits carried one."""
    import pyarrow.parquet as pq
    root = remote.location(root)
    entry = load_manifest(root)["splits"].get(split)
    if entry is None:
        raise InputError(root, f"no split '{split}'")
    if not entry.get("identity"):
        return None
    path = root / split / entry["identity"]
    try:
        source = pa.BufferReader(remote.read(path)) if isinstance(path, remote.URL) else path
        table = pq.read_table(source, columns=["index", *IDENTITY_COLUMNS])
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"unreadable event identity ({exc.__class__.__name__})") from None
    ids = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.int64) for c in table.column_names}
    if not np.array_equal(ids["index"], np.arange(entry["events"])):
        raise InputError(path, f"does not list the split's {entry['events']} events in index order")
    return ids
