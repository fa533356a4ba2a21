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
"""
from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Iterator

import awkward as ak
import numpy as np

from engine.data.conversion.locations import size as input_size

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

    def check_not_truncated(self, names: list[str]) -> str | None:
        """The problem if a page of one of `names` (or of the collections holding it) lies beyond
        the end of the file, else None."""
        size = input_size(self.path)
        for name in names:
            ids = {f.field_id for f in _with_ancestors(self.ntuple[self.paths[name]], self.ntuple)}
            indices = [i for i, c in enumerate(self.ntuple.column_records) if c.field_id in ids]
            end = max((p.locator.offset + p.locator.num_bytes for cluster in self.ntuple.page_link_list
                       for i in indices for p in cluster[i].pages), default=0)
            if end > size:
                return (f"truncated file: field '{self.paths[name]}' needs byte {end:,} "
                        f"but the file has {size:,} bytes")
        return None

    def chunks(self, names: list[str], step_size: int) -> Iterator[tuple[dict[str, ak.Array], int]]:
        """({name: array}, first entry) for `step_size` entries at a time (the last chunk fewer),
        in file order: the same chunks as a TTree's."""
        wanted = sorted({self.paths[n] for n in names})
        groups = ((first, self.ntuple.arrays(filter_name=wanted, entry_start=first, entry_stop=last))
                  for first, last in cluster_groups(self._cluster_entries(), step_size))
        for start, part in steps(groups, step_size):
            yield {n: reduce(lambda a, key: a[key], self.paths[n].split("."), part) for n in names}, start

    def _cluster_entries(self) -> list[int]:
        return [int(c.num_entries) for c in self.ntuple.cluster_summaries]

    def provenance(self, names: list[str]) -> dict:
        return {"rntuple": self.name, "fields": sorted({self.paths[n] for n in names})}


def field_names(paths: list[str]) -> dict[str, str]:
    """{name: field path}: every path as itself, and each `A.b` (a subfield of a top-level field)
    also as `A_b`, unless a field of that name exists."""
    names = {p: p for p in paths}
    for p in paths:
        parts = p.split(".")
        if len(parts) == 2:
            names.setdefault("_".join(parts), p)
    return names


def cluster_groups(entries: list[int], step_size: int) -> list[tuple[int, int]]:
    """Entry ranges [first, last) of whole consecutive clusters (of `entries` entries each), each
    range up to `step_size` entries unless a single cluster is larger."""
    groups, first, last = [], 0, 0
    for n in entries:
        if last > first and last + n - first > step_size:
            groups.append((first, last))
            first = last
        last += n
    if last > first:
        groups.append((first, last))
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


def _with_ancestors(field, ntuple) -> list:
    fields = [field]
    while fields[-1].parent is not ntuple:
        fields.append(fields[-1].parent)
    return fields
