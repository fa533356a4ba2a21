"""A TTree or an RNTuple behind one small interface, so the ROOT readers treat both alike.

The readers ask for columns by their TTree branch names (`Muon_pt`, `MET_pt`, `Electron.PT`). A
source says which names it has (`keys`), where each one's data lies (`check_not_truncated`), and
yields chunks of the named columns as {name: awkward array}, so the readers' checks and their
messages are the same for both; only the noun changes ("branch" in a TTree, "field" in an RNTuple).

RNTuple names. An RNTuple has no `nMuon` counters: a collection is one field holding a list of
records per event (`Muon` with subfields `pt`, `eta`, ...: the layout of CMS's RNTuple NanoAOD
output, and what uproot writes for a jagged record array), and a singleton may be one record per
event (`MET` with `pt`, `phi`). Every field is offered under its path (`Muon.pt`, `Electron.PT`:
Delphes's leaf names), and a subfield of a top-level field also under the branch name a TTree
would have (`Muon_pt`, `MET_pt`); a top-level field named like a branch (`MET_pt`, or `Muon_pt`
holding a list of numbers) is itself. Messages name the field by its path.

Chunks of an RNTuple are the chunks a TTree of the same entries gives (`step_size` entries, the
last fewer), so the converted files are the same, but they are read as whole clusters: clusters
are read together up to `step_size` entries, a cluster larger than `step_size` is read once and
handed out in slices, and only a chunk that straddles two reads is copied. No cluster is
decompressed twice; memory is bounded by the larger of a cluster and a step (of the columns read).

Checksums. uproot checks the RNTuple's anchor, header, footer and page lists (xxHash3-64) but not
its pages; ROOT writes a checksum after every page, so the pages of the fields read are verified
here before each read, and a flipped byte in them is an error naming the field, never a wrong
value. Pages written without one (uproot writes none) are read as they are.
"""
from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Iterator

import awkward as ak
import numpy as np
import xxhash

from engine.data.conversion.locations import open_binary
from engine.data.conversion.locations import size as input_size
from engine.errors import InputError

CHECKSUM_BYTES = 8
RNTUPLE_CLASSES = ("ROOT::RNTuple", "ROOT::Experimental::RNTuple")
"""uproot's class names of an RNTuple anchor (the second before RNTuple's first stable version)."""


class TreeSource:
    """The branches of a TTree, by their names in the file."""

    kind, noun = "tree", "branch"

    def __init__(self, tree, path: Path):
        self.tree, self.path, self.name = tree, path, tree.name
        self.keys = set(tree.keys(recursive=True, full_paths=False))
        self.num_entries = int(tree.num_entries)

    def column(self, name: str) -> str:
        """The name of `name` in the file (a branch's own name)."""
        return name

    def describe(self, name: str) -> str:
        return f"branch '{name}'"

    def check_not_truncated(self, names: list[str]) -> str | None:
        """The problem if a basket of one of `names` lies beyond the end of the file, else None."""
        size = input_size(self.path)
        for name in names:
            branch = self.tree[name]
            n = int(branch.member("fWriteBasket"))
            ends = np.asarray(branch.member("fBasketSeek")[:n], np.int64) + \
                np.asarray(branch.member("fBasketBytes")[:n], np.int64)
            if n and ends.max() > size:
                return (f"truncated file: branch '{name}' needs byte {int(ends.max()):,} "
                        f"but the file has {size:,} bytes")
        return None

    def chunks(self, names: list[str], step_size: int) -> Iterator[tuple[dict[str, ak.Array], int]]:
        """({name: array}, first entry) for up to `step_size` entries at a time, in file order."""
        for chunk, report in self.tree.iterate(names, step_size=step_size, library="ak", how=dict,
                                               report=True):
            yield chunk, report.tree_entry_start

    def provenance(self, names: list[str]) -> dict:
        return {"tree": self.name, "branches": sorted(names)}


class NTupleSource:
    """The fields of an RNTuple, by their paths and by the branch names they stand for."""

    kind, noun = "RNTuple", "field"

    def __init__(self, ntuple, path: Path):
        self.ntuple, self.path, self.name = ntuple, path, ntuple.name
        self.paths = field_names(ntuple.keys())
        self.keys = set(self.paths)
        self.num_entries = int(ntuple.num_entries)

    def column(self, name: str) -> str:
        """The path of the field that `name` stands for (`Muon_pt` -> `Muon.pt`)."""
        return self.paths[name]

    def describe(self, name: str) -> str:
        return f"field '{self.paths[name]}'"

    def _columns(self, name: str) -> list[int]:
        """The columns reading `name` needs: its own, its subfields' and its collections' offsets."""
        return physical_columns(self.ntuple, self.ntuple[self.paths[name]].field_id)

    def check_not_truncated(self, names: list[str]) -> str | None:
        """The problem if a page of one of `names` (or of the collections holding it) lies beyond
        the end of the file, else None."""
        size = input_size(self.path)
        for name in names:
            columns = self._columns(name)
            end = max((p.locator.offset + p.locator.num_bytes + (CHECKSUM_BYTES if p.has_checksum else 0)
                       for cluster in self.ntuple.page_link_list for i in columns for p in cluster[i].pages),
                      default=0)
            if end > size:
                return (f"truncated file: field '{self.paths[name]}' needs byte {end:,} "
                        f"but the file has {size:,} bytes")
        return None

    def chunks(self, names: list[str], step_size: int) -> Iterator[tuple[dict[str, ak.Array], int]]:
        """({name: array}, first entry) for `step_size` entries at a time (the last chunk fewer),
        in file order: the same chunks as a TTree's. Pages that carry a checksum are verified
        before they are read."""
        wanted = sorted({self.paths[n] for n in names})
        columns: dict[int, str] = {}  # each column read, and the first name that needs it
        for name in names:
            columns.update({i: name for i in self._columns(name) if i not in columns})
        entries = [int(c.num_entries) for c in self.ntuple.cluster_summaries]
        starts = np.concatenate([[0], np.cumsum(entries, dtype=np.int64)])

        def groups() -> Iterator[tuple[int, ak.Array]]:
            for clusters in cluster_groups(entries, step_size):
                self._verify_pages(clusters, columns)
                first, last = int(starts[clusters.start]), int(starts[clusters.stop])
                yield first, self.ntuple.arrays(filter_name=wanted, entry_start=first, entry_stop=last)

        for start, part in steps(groups(), step_size):
            yield {n: reduce(lambda a, key: a[key], self.paths[n].split("."), part) for n in names}, start

    def _verify_pages(self, clusters: range, columns: dict[int, str]) -> None:
        """InputError naming the field if a page of `columns` {column: name} in `clusters` does not
        match its checksum (the xxHash3-64 of the page's bytes, in the 8 bytes after them, as ROOT
        writes it)."""
        pages = self.ntuple.page_link_list
        with open_binary(self.path) as f:
            for cluster in clusters:
                for column, name in columns.items():
                    for page in (p for p in pages[cluster][column].pages if p.has_checksum):
                        f.seek(page.locator.offset)
                        data = f.read(page.locator.num_bytes + CHECKSUM_BYTES)
                        stored = int.from_bytes(data[-CHECKSUM_BYTES:], "little")
                        if len(data) < page.locator.num_bytes + CHECKSUM_BYTES or \
                                xxhash.xxh3_64_intdigest(data[:-CHECKSUM_BYTES]) != stored:
                            raise InputError(self.path, f"corrupt page of field '{self.paths[name]}' in "
                                                        f"cluster {cluster} (its checksum does not match)")

    def provenance(self, names: list[str]) -> dict:
        return {"rntuple": self.name, "fields": sorted({self.paths[n] for n in names})}


def physical_columns(ntuple, field_id: int) -> list[int]:
    """The columns that hold a field's data: those of the field, of its subfields (the items of
    a `std::vector<float>` field) and of the collections above it (their offsets); a projected
    field's through its alias columns."""
    records = ntuple.field_records
    ids, i = {field_id}, field_id
    while records[i].parent_field_id != i:
        i = records[i].parent_field_id
        ids.add(i)
    below = [field_id]
    while below:
        parent = below.pop()
        children = [j for j, r in enumerate(records) if r.parent_field_id == parent and j != parent]
        ids.update(children)
        below.extend(children)
    own = [i for i, c in enumerate(ntuple.column_records) if c.field_id in ids]
    return sorted({*own, *(a.physical_id for a in ntuple.alias_column_records if a.field_id in ids)})


def field_names(paths: list[str]) -> dict[str, str]:
    """{name: field path}: every path as itself, and each `A.b` (a subfield of a top-level field)
    also as `A_b`, unless a field of that name exists."""
    names = {p: p for p in paths}
    for p in paths:
        parts = p.split(".")
        if len(parts) == 2:
            names.setdefault("_".join(parts), p)
    return names


def cluster_groups(entries: list[int], step_size: int) -> list[range]:
    """Consecutive clusters (of `entries` entries each) read together: ranges of cluster indices,
    each up to `step_size` entries unless a single cluster is larger."""
    groups, first, total = [], 0, 0
    for i, n in enumerate(entries):
        if i > first and total + n > step_size:
            groups.append(range(first, i))
            first, total = i, 0
        total += n
    if len(entries) > first:
        groups.append(range(first, len(entries)))
    return groups


def steps(groups: Iterator[tuple[int, ak.Array]], step_size: int) -> Iterator[tuple[int, ak.Array]]:
    """(first entry, `step_size` entries) from consecutive (first entry, array) groups, the last
    chunk shorter: each group is sliced, and only the entries that straddle two groups are copied."""
    tail, tail_start = None, 0
    for first, array in groups:
        offset = 0
        if tail is not None:
            offset = min(step_size - len(tail), len(array))
            tail = ak.concatenate([tail, array[:offset]])
            if len(tail) < step_size:
                continue
            yield tail_start, tail
        while len(array) - offset >= step_size:
            yield first + offset, array[offset:offset + step_size]
            offset += step_size
        tail, tail_start = (array[offset:], first + offset) if offset < len(array) else (None, 0)
    if tail is not None:
        yield tail_start, tail
