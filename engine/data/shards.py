"""Canonical Parquet -> WebDataset shards per split, with a manifest and DALI index files.

Layout of a shard folder (written into the hidden folder .<out>.tmp-<pid>-<host>-<random>, renamed
into place at the end; readers refuse such a folder, and the next run removes those of killed runs):
  manifest.json                 see `build_manifest`
  train/train-00000.tar         WebDataset tar: members 000000.blk, 000001.blk, ... each one block
  train/train-00000.idx         of `events_per_member` events (engine.data.encoding); index in the
  val/...  test/...             format of DALI's wds2idx ("v1.2 N", then "blk OFFSET SIZE NAME")

Labels: the manifest's `class_names` is the sorted union of the inputs' class names; each event's
label is re-derived from its `process`. Events are shuffled globally (seeded) before writing, so
every shard mixes all classes. Splits are stratified per class; `balance` first downsamples
every class with events to the smallest one.

Reading side: `open_split` validates the manifest (engine.data.manifest), then checks each shard's
size, index, tar headers and block headers against it; with `skip_bad` it also decodes every
member (CRC, labels within the classes, events per class) and skips a bad shard whole.
`decode_member` applies the same block checks wherever a block is read later.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.data import encoding, parquet_io
from engine.data.manifest import validate_manifest
from engine.data import schema as sch
from engine.errors import InputError

SHARD_FORMAT = "engine-wds-blocks"
SHARD_FORMAT_VERSION = 1
TEMPORARY = re.compile(r"\..+\.tmp-\d+(-.+)?")   # the hidden folder `write_shards` writes into
SPLITS = ("train", "val", "test")
MEMBER_EXT = "blk"
MANIFEST = "manifest.json"
IDENTITY = "identity.parquet"
IDENTITY_COLUMNS = ("run", "lumi", "event")


@dataclass
class ShardOptions:
    """Options of `write_shards`; validated on construction."""
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    balance: bool = False
    seed: int = 0
    shard_size_mb: float = 128.0
    events_per_member: int = 4096
    codec: str = encoding.DEFAULT_CODEC

    def __post_init__(self):
        if self.codec not in encoding.CODECS:
            raise ValueError(f"codec must be one of {', '.join(encoding.CODECS)}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split must be three fractions >= 0 summing to 1, got {self.split}")
        if self.shard_size_mb <= 0 or not 1 <= self.events_per_member <= 65535:
            raise ValueError("shard_size_mb must be > 0 and events_per_member in 1..65535")


@dataclass
class Inputs:
    """All input events in memory, labels remapped to the union `class_names`."""
    kind: str
    class_names: list[str]
    table: pa.Table
    provenance: list[dict] = field(default_factory=list)


def read_inputs(paths: list[str | Path]) -> Inputs:
    """Open every canonical Parquet file under `paths`; InputError on missing/foreign/mixed input."""
    files = [f for p in paths for f in parquet_io.list_parquet(p)]
    opened = [(f, *parquet_io.open_parquet(f)) for f in files]
    kinds = {meta.get("kind") for _, _, meta in opened}
    if len(kinds) != 1:
        raise InputError(", ".join(map(str, paths)), f"inputs mix kinds {sorted(map(str, kinds))}")
    kind = kinds.pop()
    if kind not in sch.KINDS:
        raise InputError(files[0], f"unknown kind {kind!r}")
    class_names = sorted({c for _, _, meta in opened for c in meta.get("class_names", [])})
    tables, provenance = [], []
    for path, pf, meta in opened:
        table = pf.read().replace_schema_metadata(None)
        tables.append(_relabel(table, class_names, path))
        provenance.append({"file": path.name, "path": str(path), "rows": table.num_rows, "engine": meta})
    table = pa.concat_tables(tables) if tables else None
    return Inputs(kind, class_names, table, provenance)


def _relabel(table: pa.Table, class_names: list[str], source: Path) -> pa.Table:
    labels = pc.index_in(table.column("process"), value_set=pa.array(class_names))
    if labels.null_count:
        raise InputError(source, "some events have a process missing from the class names")
    index = table.schema.get_field_index("label")
    return table.set_column(index, table.schema.field(index), labels.cast(pa.int32()))


def plan_splits(labels: np.ndarray, n_classes: int, opts: ShardOptions) -> dict[str, np.ndarray]:
    """Row indices (into `labels`) of each split, in the order they are written.

    Per class: seeded permutation, optional downsampling to the smallest class with events,
    then the first fraction to train, the next to val, the rest to test; each split is then
    shuffled globally. Same labels + options -> same plan.
    """
    rng = np.random.default_rng(opts.seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(n_classes)]
    if opts.balance:
        smallest = min((len(rows) for rows in per_class if len(rows)), default=0)
        per_class = [rows[:smallest] for rows in per_class]
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for rows in per_class:
        n_train = int(round(opts.split[0] * len(rows)))
        n_val = min(int(round(opts.split[1] * len(rows))), len(rows) - n_train)
        for name, chunk in zip(SPLITS, np.split(rows, [n_train, n_train + n_val])):
            parts[name].append(chunk)
    return {name: rng.permutation(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
            for name, chunks in parts.items()}


class ShardWriter:
    """Writes one split's blocks into tar shards of about `max_bytes`, with a DALI index each."""

    def __init__(self, folder: Path, split: str, n_classes: int, max_bytes: int):
        self.folder, self.split, self.n_classes, self.max_bytes = folder, split, n_classes, max_bytes
        self.shards: list[dict] = []
        self._tar = self._file = None

    def add(self, data: bytes, labels: np.ndarray) -> None:
        if self._tar is None or (self._tar.offset + len(data) > self.max_bytes and self._index):
            self._open()
        name = f"{len(self._index):06d}.{MEMBER_EXT}"
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        offset = self._tar.offset + tarfile.BLOCKSIZE
        self._tar.addfile(info, io.BytesIO(data))
        self._index.append((offset, len(data), name))
        shard = self.shards[-1]
        shard["members"].append(int(len(labels)))
        shard["events"] += int(len(labels))
        shard["events_per_class"] = (np.asarray(shard["events_per_class"]) +
                                     np.bincount(labels, minlength=self.n_classes)).tolist()

    def _open(self) -> None:
        self.close()
        stem = f"{self.split}-{len(self.shards):05d}"
        self._file = open(self.folder / f"{stem}.tar", "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._index: list[tuple[int, int, str]] = []
        self.shards.append({"name": f"{stem}.tar", "index": f"{stem}.idx", "events": 0,
                            "events_per_class": [0] * self.n_classes, "members": [], "bytes": 0})

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.close()
        shard = self.shards[-1]
        shard["bytes"] = (self.folder / shard["name"]).stat().st_size
        (self.folder / shard["index"]).write_text(format_index(self._index))
        self._tar = None


def format_index(entries: list[tuple[int, int, str]]) -> str:
    """DALI wds2idx index text: 'v1.2 N' then one 'blk OFFSET SIZE NAME' line per sample."""
    lines = [f"v1.2 {len(entries)}"] + [f"{MEMBER_EXT} {o} {s} {n}" for o, s, n in entries]
    return "\n".join(lines) + "\n"


def write_split(inputs: Inputs, rows: np.ndarray, folder: Path, name: str, opts: ShardOptions) -> dict:
    """Encode `rows` of the inputs in blocks into folder/name; returns the split's manifest entry."""
    folder.mkdir(parents=True)
    writer = ShardWriter(folder, name, len(inputs.class_names), int(opts.shard_size_mb * 2 ** 20))
    to_block = (encoding.block_from_events_table if inputs.kind == "events"
                else encoding.block_from_fatjets_table)
    clipped = 0
    for start in range(0, len(rows), opts.events_per_member):
        chunk = inputs.table.take(pa.array(rows[start:start + opts.events_per_member]))
        try:
            block = to_block(chunk)
        except encoding.BlockError as exc:
            raise InputError(folder.name, str(exc)) from None
        clipped += block.clipped
        writer.add(encoding.encode(block, first_index=start, codec=opts.codec),
                   block.columns["labels"])
    writer.close()
    identity = write_identity(inputs.table, rows, folder)
    per_class = np.sum([s["events_per_class"] for s in writer.shards], axis=0, dtype=np.int64)
    return {"events": int(len(rows)), "bytes": int(sum(s["bytes"] for s in writer.shards)),
            "events_per_class": (per_class if writer.shards else np.zeros(
                len(inputs.class_names), np.int64)).tolist(),
            "eta_clipped": clipped, "shards": writer.shards, "identity": identity}


def write_identity(table: pa.Table, rows: np.ndarray, folder: Path) -> str:
    """folder/identity.parquet: index, run, lumi, event (int64) of the split's events, sorted by
    index (the split-wide index every loader batch carries). Returns the file name."""
    import pyarrow.parquet as pq
    ids = table.select(list(IDENTITY_COLUMNS)).take(pa.array(rows, pa.int64()))
    ids = ids.add_column(0, "index", pa.array(np.arange(len(rows), dtype=np.int64)))
    pq.write_table(ids, folder / IDENTITY, compression="zstd")
    return IDENTITY


def build_manifest(inputs: Inputs, splits: dict[str, dict], opts: ShardOptions) -> dict:
    """The manifest document (JSON-able)."""
    events = sum(s["events"] for s in splits.values())
    total = sum(s["bytes"] for s in splits.values())
    return {"format": SHARD_FORMAT, "format_version": SHARD_FORMAT_VERSION,
            "block_format_version": encoding.FORMAT_VERSION, "schema_version": sch.SCHEMA_VERSION,
            "kind": inputs.kind, "class_names": inputs.class_names, "member_ext": MEMBER_EXT,
            "options": {"split": list(opts.split), "balance": opts.balance, "seed": opts.seed,
                        "shard_size_mb": opts.shard_size_mb,
                        "events_per_member": opts.events_per_member, "codec": opts.codec},
            "codec": {"compression": opts.codec, "precision": encoding.PRECISION},
            "events": events, "bytes": total, "bytes_per_event": total / events if events else None,
            "splits": splits, "inputs": inputs.provenance}


def write_shards(paths: list[str | Path], out: str | Path, opts: ShardOptions) -> dict:
    """Parquet files/folders `paths` -> shard folder `out` (atomically). Returns the manifest."""
    out = Path(out)
    prefix = f".{out.name}{parquet_io.TMP_MARK}"
    parquet_io.remove_stale(out.parent, prefix)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not an empty folder")
    inputs = read_inputs(paths)
    if inputs.table is None or inputs.table.num_rows == 0:
        raise InputError(", ".join(map(str, paths)), "inputs hold no events")
    labels = inputs.table.column("label").to_numpy()
    plan = plan_splits(labels, len(inputs.class_names), opts)
    tmp = out.with_name(parquet_io.private_name(prefix))
    try:
        splits = {name: write_split(inputs, rows, tmp / name, name, opts) for name, rows in plan.items()}
        manifest = build_manifest(inputs, splits, opts)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=sch._json_default))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


# ---- reading side: locate a split, check its shards against the manifest and the indices ----

@dataclass
class ShardInfo:
    """One readable shard: its tar members (arrays of length n_members)."""
    name: str
    path: Path
    offsets: np.ndarray         # int64 data offset of each member in the tar
    sizes: np.ndarray           # int64 bytes of each member
    events: np.ndarray          # int64 events in each member
    first_index: np.ndarray     # int64 split-wide index of each member's first event
    events_per_class: list[int]
    members: list[str] = field(default_factory=list)     # member names, from the index


@dataclass
class SplitData:
    """A split of a shard folder: the shards that passed the checks and those skipped."""
    root: Path
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


def is_shard_path(path: str | Path) -> bool:
    """Whether `path` is a shard root or a split folder of one."""
    path = Path(path)
    return path.is_dir() and ((path / MANIFEST).is_file() or (path.parent / MANIFEST).is_file())


def locate_split(path: str | Path, split: str | None = None, default: str = "train") -> tuple[Path, str]:
    """(shard root, split name) of a shard root (+ `split`, else `default`) or of one split folder
    (whose own name `split`, if given, must be); InputError for anything else, naming the fix."""
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
        manifest = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(source, f"unreadable manifest ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise InputError(source, f"not a {SHARD_FORMAT} manifest")
    for key, want in (("format_version", SHARD_FORMAT_VERSION),
                      ("block_format_version", encoding.FORMAT_VERSION),
                      ("schema_version", sch.SCHEMA_VERSION)):
        if manifest.get(key) != want:
            raise InputError(source, f"{key} {manifest.get(key)} (this engine reads {want})")
    validate_manifest(manifest, source)
    return manifest


def open_split(path: str | Path, split: str | None = None, skip_bad: bool = False) -> SplitData:
    """Check every shard of a split; a bad shard is an InputError, or skipped with `skip_bad`.

    Every shard's size, index, tar headers and block headers are checked. With `skip_bad`, every
    member is also decoded and checked (payload CRC, labels, events per class), so that a shard
    with a bad block is skipped whole before the epoch is planned, identically on every rank.
    """
    root, split = locate_split(path, split)
    manifest = load_manifest(root)
    if split not in manifest["splits"]:
        raise InputError(root, f"no split '{split}' (has {', '.join(manifest['splits'])})")
    shards, skipped, first = [], [], 0
    for entry in manifest["splits"][split]["shards"]:
        try:
            info = check_shard(root / split, entry, manifest["kind"], first)
            if skip_bad:
                verify_shard(info, len(manifest["class_names"]))
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
    per_class = np.zeros(n_classes, np.int64)
    with _readable(info.path) as f:
        for j in range(len(info.offsets)):
            block = decode_member(os.pread(f.fileno(), int(info.sizes[j]), int(info.offsets[j])),
                                  info, j, n_classes)
            per_class += np.bincount(block.columns["labels"], minlength=n_classes)
    if per_class.tolist() != list(info.events_per_class):
        raise InputError(info.path, f"events per class {per_class.tolist()}, the manifest says "
                                    f"{list(info.events_per_class)}")


@contextmanager
def _readable(path: Path):
    """The file opened for reading; an OSError (permissions, I/O) becomes an InputError naming it."""
    try:
        with open(path, "rb") as f:
            yield f
    except OSError as exc:
        raise InputError(path, f"unreadable ({exc.strerror or exc.__class__.__name__})") from None


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


def read_index(idx: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Offsets, sizes and member names from a DALI wds2idx index file (one 'blk' component)."""
    if not idx.is_file():
        raise InputError(idx, "index file is missing (re-run `shard`, or DALI's wds2idx)")
    try:
        lines = idx.read_text().splitlines()
        version, count = lines[0].split()
        rows = [line.split() for line in lines[1:] if line.strip()]
        if (version != "v1.2" or int(count) != len(rows)
                or any(len(r) != 4 or r[0] != MEMBER_EXT for r in rows)):
            raise ValueError
        offsets = np.array([int(r[1]) for r in rows], np.int64)
        sizes = np.array([int(r[2]) for r in rows], np.int64)
        return offsets, sizes, [r[3] for r in rows]
    except OSError as exc:
        raise InputError(idx, f"unreadable ({exc.strerror or exc.__class__.__name__})") from None
    except (ValueError, IndexError, OverflowError):
        raise InputError(idx, "not a valid index file (expected DALI wds2idx v1.2)") from None


def _tar_size(header: bytes) -> int | None:
    try:
        return int(header[124:136].rstrip(b"\0 ").decode("ascii") or "0", 8)
    except ValueError:
        return None


def _check_member(fd: int, offset: int, size: int, name: str, kind: str, events: int,
                  first: int, file_bytes: int) -> str | None:
    if offset < tarfile.BLOCKSIZE or size < 0 or offset + size > file_bytes:
        return "index points outside the tar"
    raw = os.pread(fd, tarfile.BLOCKSIZE + encoding.HEADER.size, offset - tarfile.BLOCKSIZE)
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


def read_identity(root: str | Path, split: str) -> dict[str, np.ndarray] | None:
    """index, run, lumi, event ((E,) int64 each, sorted by index) of a split's events, from the
    split's identity.parquet; None for shards written before splits carried one."""
    import pyarrow.parquet as pq
    root = Path(root)
    entry = load_manifest(root)["splits"].get(split)
    if entry is None:
        raise InputError(root, f"no split '{split}'")
    if not entry.get("identity"):
        return None
    path = root / split / entry["identity"]
    try:
        table = pq.read_table(path, columns=["index", *IDENTITY_COLUMNS])
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"unreadable event identity ({exc.__class__.__name__})") from None
    ids = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.int64) for c in table.column_names}
    if not np.array_equal(ids["index"], np.arange(entry["events"])):
        raise InputError(path, f"does not list the split's {entry['events']} events in index order")
    return ids
