"""Where a convert input lies, a local file or a URL (`root://`, `s3://`, `https://`, read through
engine.data.remote), and what the converter asks of it: its name and stem, its byte size, its
first bytes, its whole content (JSON), how uproot opens it; and lists of inputs (`--files-from`).

Every failure is an InputError naming the input, in one line: a missing file is `no such file`
whatever the storage, a folder `is a folder, not a file`, a server that does not answer `cannot
read from the server (...)`. A URL's size comes from the server (fsspec's `info`), in one request.

A list of inputs holds one path or URL a line; blank lines and lines whose first non-blank
character is `#` are skipped (a `#` later in a line is part of the name). A relative local path
is relative to the list's folder (a list travels with its files); a URL or an absolute path is
taken as it is. A list behind a URL is read through the same storage, and its relative entries
are relative to the URL's folder.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import uproot

from engine.data import remote
from engine.data.remote import URL, location
from engine.errors import InputError

Source = Path | URL
"""A convert input: a local path or a URL."""

READ_AHEAD_BYTES = 1 << 20
"""Smallest request of `open_binary` on a URL (each storage's default differs: 5 MiB to 50 MiB)."""

_NOT_FOUND_CODES = ("[3011]",)
"""XRootD's kXR_NotFound, which its client raises as a plain OSError."""

__all__ = ["Source", "content", "file_list", "head", "input_name", "input_stem", "location",
           "open_binary", "size", "uproot_source"]


def input_name(source: Source) -> str:
    """The file name of `source` (for a URL, of its path, without query or fragment)."""
    if isinstance(source, URL):
        return PurePosixPath(urlsplit(str(source)).path).name
    return source.name


def input_stem(source: Source) -> str:
    """The file name without its last suffix: `root://host//eos/x/nano.root` -> `nano`."""
    return PurePosixPath(input_name(source)).stem


def size(source: Source) -> int:
    """Bytes in the file; InputError if it is missing, a folder, or its server does not answer."""
    if isinstance(source, URL):
        return int(_info(source)["size"])
    _check_local(source)
    return source.stat().st_size


def head(source: Source, n: int = 64) -> bytes:
    """The first `n` bytes (fewer if the file is shorter); the same InputErrors as `size`."""
    if isinstance(source, URL):
        total = size(source)
        return remote.read(source, 0, min(n, total)) if total else b""
    _check_local(source)
    with open(source, "rb") as f:
        return f.read(n)


def content(source: Source) -> bytes:
    """The whole file; the same InputErrors as `size`."""
    if isinstance(source, URL):
        size(source)
        return remote.read(source)
    _check_local(source)
    return source.read_bytes()


def open_binary(source: Source):
    """The file opened for reading bytes at any place (`seek`, `read`), as a context manager; a
    URL's in ranged requests of at least `READ_AHEAD_BYTES`."""
    if isinstance(source, URL):
        fs, path = remote.filesystem(source)
        try:
            return fs.open(path, "rb", block_size=READ_AHEAD_BYTES)
        except Exception as exc:  # noqa: BLE001 - each storage client raises its own types
            raise _failure(source, exc) from None
    _check_local(source)
    return open(source, "rb")


def uproot_source(source: Source) -> tuple[str, dict]:
    """(path, options) for `uproot.open`: plain reads of a local file (mapped pages would count as
    memory in proportion to the file), fsspec's ranged, coalesced reads of a URL."""
    if isinstance(source, URL):
        remote.filesystem(source)           # the XRootD client's retry defaults, before it starts
        return str(source), {"handler": uproot.source.fsspec.FSSpecSource}
    return str(source), {"handler": uproot.MultithreadedFileSource}


def file_list(listing: str | Path | URL) -> list[Source]:
    """The inputs named in the list file `listing`, in order (see the module docstring)."""
    where = location(listing)
    try:
        text = content(where).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(where, "not a text file (a list of input paths or URLs, one a line)") from None
    base = where.parent
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        source = location(entry)
        if isinstance(source, Path) and not source.is_absolute() and not entry.lower().startswith("file://"):
            source = base / entry
        entries.append(source)
    return entries


def _check_local(path: Path) -> None:
    if not path.is_file():
        raise InputError(path, "is a folder, not a file" if path.is_dir() else "no such file")


def _info(url: URL) -> dict:
    fs, path = remote.filesystem(url)
    fs.invalidate_cache(path)               # a size listed earlier in this process may be stale
    try:
        info = fs.info(path)
    except Exception as exc:  # noqa: BLE001 - each storage client raises its own types
        raise _failure(url, exc) from None
    if info.get("type") == "directory":
        raise InputError(url, "is a folder, not a file")
    return info


def _failure(url: URL, exc: BaseException) -> InputError:
    if isinstance(exc, FileNotFoundError) or any(code in str(exc) for code in _NOT_FOUND_CODES):
        return InputError(url, "no such file")
    return remote.failure(url, exc)
