"""Files written atomically: a hidden temporary name beside the target, renamed into place when
complete; temporaries and private folders left by killed writers are recognised and removed.

Dependency-free but for engine.errors, so every layer that writes files can use it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.errors import InputError

TMP_MARK = ".tmp-"


@contextmanager
def atomic_path(final: str | Path, sweep: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` on success, delete it on error.

    The temporary name is hidden and unique to this call (`private_name`), so temporaries of
    `final` whose writer is gone (a killed run) are recognised and removed here first (`sweep`; a
    writer of many files in one folder sweeps it once with `sweep_temporaries` instead).
    """
    final = Path(final)
    if final.is_dir():
        raise InputError(final, "is a folder: cannot be replaced by the file to write there")
    make_folder(final.parent)
    if sweep:
        remove_stale(final.parent, f".{final.name}{TMP_MARK}")
    tmp = final.with_name(private_name(f".{final.name}{TMP_MARK}"))
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


_MADE: set[str] = set()
"""Names `private_name` gave out in this process: an entry with this process's pid and another name
was left by an earlier process that had the same pid (a killed run before a restart)."""


def private_name(prefix: str) -> str:
    """`prefix<pid>-<host>-<random>`: a name no other writer uses, telling who made it."""
    name = f"{prefix}{os.getpid()}-{_host()}-{secrets.token_hex(4)}"
    _MADE.add(name)
    return name


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Delete the entries of `folder` that `private_name(prefix)` made (or `prefix<pid>` alone, the
    older form) for a process of this host that no longer runs (a killed writer). Another host's
    entries, and those of running processes, are left alone. Returns the entries removed."""
    removed = []
    for entry in (folder.glob(f"{_glob_escape(prefix)}*") if folder.is_dir() else ()):
        pid, _, rest = entry.name[len(prefix):].partition("-")
        host = rest.rpartition("-")[0] if rest.count("-") else ""
        if pid.isdigit() and host in ("", _host()) and _stale(int(pid), entry.name):
            _remove(entry)
            removed.append(entry)
    return removed


def sweep_temporaries(folder: Path) -> list[Path]:
    """`remove_stale` for the temporaries of every file `atomic_path` wrote in `folder`, at once."""
    found = folder.glob(f".*{TMP_MARK}*") if folder.is_dir() else ()
    prefixes = {entry.name[:entry.name.rindex(TMP_MARK) + len(TMP_MARK)] for entry in found}
    return [entry for prefix in sorted(prefixes) for entry in remove_stale(folder, prefix)]


@contextmanager
def private_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new hidden folder `parent/private_name(prefix)` for one run's intermediate files (readers
    never list hidden folders), removed at the end whatever happens; folders of the same prefix
    that killed runs left are removed first."""
    remove_stale(parent, prefix)
    folder = parent / private_name(prefix)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stale(pid: int, name: str) -> bool:
    if pid == os.getpid():
        return name not in _MADE
    return not _process_alive(pid)


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, not yet reaped: a killed pool worker under an init that
    does not reap) writes nothing more and counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """Create folder `path` if needed; InputError naming it if it cannot be created or written."""
    return make_folder(path, f"the {option} folder")


def make_folder(path: str | Path, what: str = "the folder") -> Path:
    """Create folder `path` (and its parents) if needed; InputError naming it if it, or a folder on
    the way to it, is a file, or if it cannot be created or written."""
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking == path:
        raise InputError(path, f"is a file, not {what}")
    if blocking is not None:
        raise InputError(path, f"cannot make {what}: {blocking} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path, f"cannot create {what} ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write into {what} (permission denied)")
    return path
