"""A bounded local cache of remote blocks (tar members), shared safely by processes.

One file per block, `FOLDER/<2 hex>/<key>.blk`, where the key hashes the shard's URL, its size and
version on the server (ETag or modification time), the manifest's digest and the member's place,
so a changed shard or a rewritten shard folder never serves stale bytes. Blocks rather than
whole shards: a rank reads only its share of the blocks, spread over every shard, so caching
whole shards would make every rank fetch (and store) all of them.

Files are written atomically (engine.files.atomic_path), so a process never reads a partial
block; any number of processes (DataLoader workers, ranks) may share the folder. A read touches
the file's modification time; beyond `max_bytes`, the least recently used blocks are deleted
(to 90 % of the bound). A block deleted while another process opens it is a miss, fetched
again; every block is checked when decoded (its CRC), wherever it came from.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from engine.files import atomic_path, sweep_temporaries

SUFFIX = ".blk"


class BlockCache:
    """get/put blocks by key in `folder`, keeping at most about `max_bytes` there."""

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self._lock = threading.Lock()
        self._used: int | None = None          # bytes in the folder, counted at the first put

    @staticmethod
    def key(url: object, version: str, offset: int, size: int) -> str:
        return hashlib.sha256(f"{url}\n{version}\n{offset}\n{size}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{SUFFIX}"

    def get(self, key: str, size: int) -> bytes | None:
        """The cached bytes of `key` (`size` of them), or None."""
        path = self._path(key)
        try:
            data = path.read_bytes()
            os.utime(path)
        except OSError:                        # absent, or evicted by another process meanwhile
            return None
        return data if len(data) == size else None

    def put(self, key: str, data: bytes) -> None:
        """Store a block (atomically), then evict the least recently used beyond the bound."""
        with atomic_path(self._path(key), sweep=False) as tmp:
            tmp.write_bytes(data)
        with self._lock:
            if self._used is None:
                self._used = sum(size for _, size, _ in self._entries())
            else:
                self._used += len(data)
            if self._used > self.max_bytes:
                self._used = self._evict(int(0.9 * self.max_bytes))

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(mtime ns, bytes, path) of every cached block; temporaries of killed writers removed."""
        out = []
        for sub in (p for p in self.folder.iterdir() if p.is_dir()):
            sweep_temporaries(sub)
            for entry in os.scandir(sub):
                if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    out.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
        return out

    def _evict(self, target: int) -> int:
        """Delete the oldest blocks until at most `target` bytes remain; returns the bytes left."""
        entries = sorted(self._entries())
        used = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if used <= target:
                break
            path.unlink(missing_ok=True)
            used -= size
        return used
