"""The shard folder's names and format constants, and validation of its manifest.json (see
engine.data.shards for the layout).

`validate_manifest` checks every key the readers use, with its type, and the sums that must agree:
the events of a split = the sum of its shards' events = the sum of their members' events, and the
same per class; a split's and a shard's file names are plain names inside the shard folder. Any
problem is one InputError naming the manifest and the key.
"""
from __future__ import annotations

import re
from pathlib import Path

from engine.data.canonical import schema
from engine.errors import InputError

SHARD_FORMAT = "engine-wds-blocks"
SHARD_FORMAT_VERSION = 1
TEMPORARY = re.compile(r"\..+\.tmp-\d+(-.+)?")   # the hidden folder `write_shards` writes into
SPLITS = ("train", "val", "test")
MEMBER_EXT = "blk"
MANIFEST = "manifest.json"
IDENTITY = "identity.parquet"
IDENTITY_COLUMNS = ("run", "lumi", "event")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _counts(value, length: int | None = None) -> bool:
    return isinstance(value, list) and all(map(_count, value)) and (length is None or len(value) == length)


def validate_manifest(manifest, source: str | Path) -> None:
    """InputError(source, ...) unless `manifest` (parsed JSON) is a consistent shard manifest."""
    def fail(problem: str):
        raise InputError(source, problem)

    if not isinstance(manifest, dict):
        fail("not a JSON object")
    if manifest.get("kind") not in schema.KINDS:
        fail(f"'kind' is {manifest.get('kind')!r}, expected one of {', '.join(schema.KINDS)}")
    names = manifest.get("class_names")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)
            and len(set(names)) == len(names)):
        fail("'class_names' must be a non-empty list of distinct strings")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        fail("'splits' must be a non-empty object of splits")
    for name, split in splits.items():
        problem = _split_problem(name, split, len(names))
        if problem:
            fail(problem)
    if not _count(manifest.get("events")) or manifest["events"] != sum(s["events"] for s in splits.values()):
        fail("'events' is not the sum of the splits' events")
    if not _count(manifest.get("bytes")):
        fail("'bytes' must be a non-negative integer")


def _split_problem(name: str, split, n_classes: int) -> str | None:
    where = f"splits.{name}"
    if not PLAIN_NAME.fullmatch(name):
        return f"split name {name!r} is not a plain folder name"
    if not isinstance(split, dict):
        return f"'{where}' must be an object"
    for key in ("events", "bytes"):
        if not _count(split.get(key)):
            return f"'{where}.{key}' must be a non-negative integer"
    if not _counts(split.get("events_per_class"), n_classes):
        return f"'{where}.events_per_class' must list {n_classes} counts (one per class)"
    identity = split.get("identity")
    if identity is not None and not (isinstance(identity, str) and PLAIN_NAME.fullmatch(identity)):
        return f"'{where}.identity' must be a plain file name"
    entries = split.get("shards")
    if not isinstance(entries, list):
        return f"'{where}.shards' must be a list"
    for i, entry in enumerate(entries):
        problem = _shard_problem(entry, n_classes)
        if problem:
            return f"'{where}.shards[{i}]' {problem}"
    if len({e["name"] for e in entries}) != len(entries):
        return f"'{where}.shards' lists a shard twice"
    if split["events"] != sum(e["events"] for e in entries):
        return f"'{where}.events' is not the sum of its shards' events"
    per_class = [sum(c) for c in zip(*(e["events_per_class"] for e in entries))] or [0] * n_classes
    if split["events_per_class"] != per_class:
        return f"'{where}.events_per_class' is not the sum of its shards' counts"
    return None


def _shard_problem(entry, n_classes: int) -> str | None:
    if not isinstance(entry, dict):
        return "must be an object"
    for key, suffix in (("name", ".tar"), ("index", ".idx")):
        value = entry.get(key)
        if not (isinstance(value, str) and PLAIN_NAME.fullmatch(value) and value.endswith(suffix)):
            return f"'{key}' must be a plain file name ending in {suffix}"
    for key in ("events", "bytes"):
        if not _count(entry.get(key)):
            return f"'{key}' must be a non-negative integer"
    if not _counts(entry.get("members")):
        return "'members' must be a list of event counts"
    if not _counts(entry.get("events_per_class"), n_classes):
        return f"'events_per_class' must list {n_classes} counts (one per class)"
    if sum(entry["members"]) != entry["events"] or sum(entry["events_per_class"]) != entry["events"]:
        return "'events' is not the sum of its members' (or its classes') events"
    return None
