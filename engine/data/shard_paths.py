"""Where a command's shard argument points: a shard root or one of its split folders.

`resolve_split` turns what a user passes (`shards`, `shards/test`) into (root, split), and says
what to do when the path holds Parquet events instead ("run `python -m engine shard` first").
"""
from __future__ import annotations

from pathlib import Path

from engine.data import shards
from engine.errors import InputError


def is_shard_path(path: str | Path) -> bool:
    """Whether `path` is a shard root or a split folder of one."""
    path = Path(path)
    return path.is_dir() and ((path / shards.MANIFEST).is_file() or (path.parent / shards.MANIFEST).is_file())


def holds_parquet(path: str | Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.suffix == ".parquet"
    return path.is_dir() and any(p for p in path.rglob("*.parquet") if not p.name.startswith("."))


def resolve_split(path: str | Path, split: str | None, default: str) -> tuple[Path, str]:
    """(shard root, split) of a shard root (+ `split`, else `default`) or of a split folder (whose
    own split `split`, if given, must match). InputError for anything else, naming the fix."""
    if not Path(path).exists():
        raise InputError(path, "no such shard folder")
    if is_shard_path(path):
        root_given = (Path(path) / shards.MANIFEST).is_file()
        return shards.locate_split(path, split or (default if root_given else None))
    if holds_parquet(path):
        raise InputError(path, "holds Parquet events, not shards: run `python -m engine shard --input "
                               f"{path} --out SHARDS` first, then pass SHARDS")
    raise InputError(path, f"not a shard folder (no {shards.MANIFEST} here or in the parent folder)")
