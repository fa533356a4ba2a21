"""Files behind a URL (`s3://bucket/prefix`, `root://host//path`, `https://host/path`), read
through fsspec with ranged reads; every failure is an InputError naming the URL, in one line.

A location is a local `Path` or a `URL` (`location(text)` picks), and both join with `/`, so the
readers above this module name their files the same way whatever the storage.

Credentials and endpoints come from each client's own environment: for S3 the standard AWS
variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` for a server other than
AWS, ...), for XRootD the `XRD_*` variables and the usual grid proxy. The XRootD client would retry
an unreachable server for minutes; here it gives up after 2 tries in 10 s, unless the environment
says otherwise (`XRD_CONNECTIONRETRY`, `XRD_CONNECTIONWINDOW`, `XRD_REQUESTTIMEOUT`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_XRD_DEFAULTS = {"XRD_CONNECTIONRETRY": "2", "XRD_CONNECTIONWINDOW": "5", "XRD_REQUESTTIMEOUT": "60"}


@dataclass(frozen=True)
class URL:
    """A remote file or folder: `URL("s3://bucket/shards") / "train"`, `.name`, `.parent`."""
    url: str

    def __post_init__(self):
        scheme, rest = self.url.split("://", 1)
        host, sep, path = rest.partition("/")
        path = ("/" if scheme == "root" and path.startswith("/") else "") + path.strip("/")
        object.__setattr__(self, "url", f"{scheme}://{host}{sep}{path}".rstrip("/") if path
                           else f"{scheme}://{host}")

    def __truediv__(self, name: str) -> URL:
        return URL(f"{self.url}/{name}")

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return self.url.rpartition("/")[2]

    @property
    def parent(self) -> URL:
        head = self.url.rpartition("/")[0]
        return URL(head) if "://" in head and not head.endswith(":/") else self


def is_url(path: object) -> bool:
    """Whether `path` names a remote location (a URL with a scheme other than file://)."""
    if isinstance(path, URL):
        return True
    match = _SCHEME.match(str(path)) if isinstance(path, str) else None
    return bool(match) and match.group(1).lower() != "file"


def location(path: str | Path | URL) -> Path | URL:
    """`path` as a URL if it is one, else as a local Path (file:// stripped)."""
    if isinstance(path, (Path, URL)):
        return path
    if is_url(path):
        return URL(path)
    return Path(path[len("file://"):] if path.lower().startswith("file://") else path)


_FILESYSTEMS: dict[tuple, object] = {}
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def filesystem(url: URL):
    """(fsspec filesystem, its path) of a URL; one filesystem per protocol, host and endpoint
    variables per process (a forked DataLoader worker makes its own: the parent's connections do
    not survive a fork)."""
    import fsspec
    for key, value in _XRD_DEFAULTS.items():
        os.environ.setdefault(key, value)
    scheme, rest = url.url.split("://", 1)
    key = (os.getpid(), f"{scheme}://{rest.partition('/')[0]}",
           *(os.environ.get(name) for name in _ENDPOINT_VARIABLES))
    try:
        if key not in _FILESYSTEMS:
            _FILESYSTEMS[key] = fsspec.core.url_to_fs(url.url, skip_instance_cache=True)[0]
        fs = _FILESYSTEMS[key]
        return fs, fs._strip_protocol(url.url)
    except (ImportError, ValueError) as exc:
        raise InputError(url, f"cannot read {scheme}:// URLs ({exc})") from None


def read(url: URL, start: int | None = None, end: int | None = None) -> bytes:
    """Bytes [start, end) of the file at `url` (all of it by default), in one ranged request."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path, start=start, end=end)
    except Exception as exc:  # noqa: BLE001 - the clients raise their own types; see failure()
        raise failure(url, exc) from None


def exists(url: URL) -> bool:
    fs, path = filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:  # noqa: BLE001
        raise failure(url, exc) from None


def info(url: URL) -> dict | None:
    """fsspec's info (size, ...) of the file at `url`, or None if there is none."""
    fs, path = filesystem(url)
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        raise failure(url, exc) from None


def listing(url: URL) -> dict[str, dict]:
    """{file name: fsspec info (size, ETag or mtime)} of the files directly in folder `url`, in one
    request; {} for a folder that does not exist."""
    fs, path = filesystem(url)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001
        raise failure(url, exc) from None
    return {e["name"].rstrip("/").rpartition("/")[2]: e for e in entries if e.get("type") == "file"}


def version(info: dict) -> str:
    """What tells two versions of a remote file apart, from its listing entry (S3's ETag, a
    modification time), besides its size."""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def failure(url: URL, exc: BaseException) -> InputError:
    """The InputError for a failed remote operation on `url`, in one line. Anything else than a
    programming error (TypeError, ...) from a storage client is the server's or the URL's problem."""
    if isinstance(exc, (TypeError, AttributeError, NameError, AssertionError)):
        raise exc
    if isinstance(exc, FileNotFoundError):
        return InputError(url, "no such file on the server")
    if isinstance(exc, PermissionError):
        return InputError(url, "permission denied by the server")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return InputError(url, f"cannot read from the server ({type(exc).__name__}: {text[:200]})")
