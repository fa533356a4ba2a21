"""Fuzz: seeded corruptions of shard tars, indexes and manifests, read by the loader and `inspect`.

Faults: byte flips (tar headers, block headers, payloads, anywhere), truncations, deleted files,
swapped and reordered members, index edits, manifest edits (keys deleted, numbers and types
changed, text damaged, structure changed) and forged blocks with a valid CRC (labels outside the
classes, labels of another class). For every case a full epoch of the damaged split through the
loader (torch backend, without and with `skip_bad`; for one case of each fault also with a
DataLoader worker process and with the DALI backend) and `inspect` (in-process; as a subprocess
for a sample) either deliver every event exactly once (with `skip_bad`: every event of the shards
not skipped, each skipped shard whole and counted), or stop with one InputError / exit 2 and one
line naming a file. `inspect` reports "ok" only when every split reads exactly what the undamaged
folder holds.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch

from engine.data.loader import LoaderConfig, make_loader
from engine.data.shards import encoding
from engine.data.shards.inspect import inspect_shards
from engine.data.shards.manifest import MEMBER_EXT
from engine.data.shards.reader import read_index
from engine.data.shards.writer import format_index
from engine.errors import InputError
from tests.events import synthetic_shards

SEEDS_PER_FAULT = 20
SUBPROCESS_FAULTS = 6          # `inspect` as a subprocess: seed 0 of every sixth fault
CFG = dict(batch_size=32, shuffle_buffer=64, shuffle=False)
try:
    import nvidia.dali  # noqa: F401
    HAS_DALI = True
except ImportError:
    HAS_DALI = False


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The undamaged shard folder and, per split, its events' labels and each shard's index range."""
    root = synthetic_shards(tmp_path_factory.mktemp("fuzz"), 100, seed=11, events_per_member=20,
                            shard_size_mb=0.006)
    manifest = json.loads((root / "manifest.json").read_text())
    truth = {}
    for split, entry in manifest["splits"].items():
        labels = np.zeros(entry["events"], np.int64)
        for batch in make_loader(root, LoaderConfig(**CFG), split=split):
            labels[batch["index"].numpy()] = batch["labels"].numpy()
        bounds = np.cumsum([0] + [s["events"] for s in entry["shards"]])
        truth[split] = {"labels": labels, "ranges": list(zip(bounds[:-1], bounds[1:])),
                        "per_class": entry["events_per_class"]}
    return root, manifest, truth


# ---- faults: each damages a copy of the shard folder and returns the split it damaged ----

def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _save(folder, manifest):
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _pick(rng, folder):
    """(split, position, manifest entry) of a random shard."""
    entries = [(split, i, e) for split, s in _manifest(folder)["splits"].items()
               for i, e in enumerate(s["shards"])]
    return entries[rng.integers(len(entries))]


def _flip(path, at, rng):
    data = bytearray(path.read_bytes())
    data[at] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))


def _member(rng, folder):
    split, _, entry = _pick(rng, folder)
    tar = folder / split / entry["name"]
    offsets, sizes, _ = read_index(tar.with_suffix(".idx"))
    j = rng.integers(len(offsets))
    return split, tar, int(offsets[j]), int(sizes[j])


def flip_tar_header(rng, folder):
    split, tar, offset, _ = _member(rng, folder)
    _flip(tar, offset - tarfile.BLOCKSIZE + rng.integers(tarfile.BLOCKSIZE), rng)
    return split


def flip_block_header(rng, folder):
    split, tar, offset, _ = _member(rng, folder)
    _flip(tar, offset + rng.integers(encoding.HEADER.size), rng)
    return split


def flip_payload(rng, folder):
    split, tar, offset, size = _member(rng, folder)
    _flip(tar, offset + encoding.HEADER.size + rng.integers(size - encoding.HEADER.size), rng)
    return split


def flip_anywhere(rng, folder):
    split, _, entry = _pick(rng, folder)
    path = folder / split / entry[["name", "index"][rng.integers(2)]]
    _flip(path, rng.integers(path.stat().st_size), rng)
    return split


def truncate(rng, folder):
    split, _, entry = _pick(rng, folder)
    path = folder / split / entry[["name", "name", "index"][rng.integers(3)]]
    path.write_bytes(path.read_bytes()[:rng.integers(path.stat().st_size)])
    return split


def delete_file(rng, folder):
    split, _, entry = _pick(rng, folder)
    choice = rng.integers(5)
    victim = folder / split / entry[["name", "index"][choice % 2]]
    (folder / "manifest.json" if choice == 4 else victim).unlink()
    return split


def _blocks(tar):
    with tarfile.open(tar) as t:
        return [t.extractfile(m).read() for m in t.getmembers()]


def _rewrite(folder, split, i, blocks, index_too=True):
    """Write `blocks` as shard i of `split` (a valid tar); with `index_too`, also its index and
    manifest size, so that only the blocks themselves can be found out."""
    manifest = _manifest(folder)
    entry = manifest["splits"][split]["shards"][i]
    tar_path, entries = folder / split / entry["name"], []
    with open(tar_path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for j, data in enumerate(blocks):
            info = tarfile.TarInfo(f"{j:06d}.{MEMBER_EXT}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            entries.append((tar.offset + tarfile.BLOCKSIZE, len(data), info.name))
            tar.addfile(info, io.BytesIO(data))
    if index_too:
        (folder / split / entry["index"]).write_text(format_index(entries))
        entry["bytes"] = tar_path.stat().st_size
        _save(folder, manifest)


def swap_members(rng, folder):
    """Two members' data exchanged (within a shard, or with another shard of the split)."""
    split, i, entry = _pick(rng, folder)
    tar = folder / split / entry["name"]
    blocks = _blocks(tar)
    others = [e for e in _manifest(folder)["splits"][split]["shards"] if e["name"] != entry["name"]]
    if len(blocks) > 1:
        a, b = rng.choice(len(blocks), 2, replace=False)
        blocks[a], blocks[b] = blocks[b], blocks[a]
    elif others:
        donor = _blocks(folder / split / others[rng.integers(len(others))]["name"])
        blocks[0] = donor[rng.integers(len(donor))]
    _rewrite(folder, split, i, blocks, index_too=bool(rng.integers(2)))
    return split


def reorder_members(rng, folder):
    """A shard's members in another order, its tar, index and size all consistent."""
    split, i, entry = _pick(rng, folder)
    blocks = _blocks(folder / split / entry["name"])
    _rewrite(folder, split, i, [blocks[k] for k in rng.permutation(len(blocks))[::-1]])
    return split


def edit_index(rng, folder):
    split, _, entry = _pick(rng, folder)
    idx = folder / split / entry["index"]
    lines = idx.read_text().splitlines()
    row = 1 + rng.integers(len(lines) - 1)
    choice = rng.integers(4)
    if choice == 0 and len(lines) > 2:
        other = 1 + (row % (len(lines) - 1))
        lines[row], lines[other] = lines[other], lines[row]
    elif choice == 1:
        del lines[row]
    else:
        line = row if choice == 2 else 0
        parts = lines[line].split()
        col = rng.integers(1, 3) if choice == 2 else 1          # offset or size; or the count
        parts[col] = str(int(parts[col]) + [-512, -1, 1, 7, 512, 10 ** 20][rng.integers(6)])
        lines[line] = " ".join(parts)
    idx.write_text("\n".join(lines) + "\n")
    return split


def _paths(doc, prefix=()):
    """Paths (key tuples) of every value inside the manifest, except the inputs' provenance."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        if key != "inputs":
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))


def _at(manifest, path):
    for key in path[:-1]:
        manifest = manifest[key]
    return manifest, path[-1]


def manifest_delete_key(rng, folder):
    manifest = _manifest(folder)
    paths = [p for p in _paths(manifest) if isinstance(_at(manifest, p)[0], dict)]
    parent, key = _at(manifest, paths[rng.integers(len(paths))])
    del parent[key]
    _save(folder, manifest)
    return "train"


def manifest_edit_number(rng, folder):
    manifest = _manifest(folder)
    paths = [p for p in _paths(manifest) if type(_at(manifest, p)[0][_at(manifest, p)[1]]) is int]
    parent, key = _at(manifest, paths[rng.integers(len(paths))])
    parent[key] = int(parent[key] + rng.choice([-100, -2, -1, 1, 3, 10 ** 6]))
    _save(folder, manifest)
    return "train"


def manifest_edit_type(rng, folder):
    manifest = _manifest(folder)
    paths = list(_paths(manifest))
    parent, key = _at(manifest, paths[rng.integers(len(paths))])
    parent[key] = [None, "x", 1.5, [], {}, True, "../train"][rng.integers(7)]
    _save(folder, manifest)
    return "train"


def manifest_text(rng, folder):
    path = folder / "manifest.json"
    if rng.integers(2):
        _flip(path, rng.integers(path.stat().st_size), rng)
    else:
        path.write_bytes(path.read_bytes()[:rng.integers(path.stat().st_size)])
    return "train"


def manifest_structure(rng, folder):
    manifest = _manifest(folder)
    split, i, _ = _pick(rng, folder)
    entries = manifest["splits"][split]["shards"]
    choice = rng.integers(5)
    if choice == 0:
        manifest["class_names"] = manifest["class_names"][:-1]
    elif choice == 1:
        manifest["class_names"] = manifest["class_names"] + ["extra"]
    elif choice == 2:
        entries.append(dict(entries[i]))
    elif choice == 3:
        del entries[i]
    else:
        entries[i], entries[-1] = entries[-1], entries[i]
    _save(folder, manifest)
    return split


def _forge(rng, folder, outside: bool):
    """A member rewritten with one label changed (a valid block: CRC, sizes and index agree)."""
    split, i, entry = _pick(rng, folder)
    blocks = _blocks(folder / split / entry["name"])
    j = rng.integers(len(blocks))
    block = encoding.decode(blocks[j])
    labels = block.columns["labels"].copy()
    n_classes = len(_manifest(folder)["class_names"])
    row = rng.integers(len(labels))
    labels[row] = (n_classes + rng.integers(3)) if outside else (labels[row] + 1) % n_classes
    forged = encoding.Block(block.kind, {**block.columns, "labels": labels}, block.weights,
                            fatjet=block.fatjet, pids=block.pids, msoftdrop=block.msoftdrop,
                            parton=block.parton)
    blocks[j] = encoding.encode(forged, first_index=block.first_index,
                                codec=encoding.read_header(blocks[j]).codec)
    _rewrite(folder, split, i, blocks)
    return split


def forge_label_outside(rng, folder):
    return _forge(rng, folder, outside=True)


def forge_other_class(rng, folder):
    return _forge(rng, folder, outside=False)


FAULTS = [flip_tar_header, flip_block_header, flip_payload, flip_anywhere, truncate, delete_file,
          swap_members, reorder_members, edit_index, manifest_delete_key, manifest_edit_number,
          manifest_edit_type, manifest_text, manifest_structure, forge_label_outside,
          forge_other_class]
CASES = len(FAULTS) * SEEDS_PER_FAULT


# ---- what every run must do ----

def _one_line_naming(text: str, folder) -> None:
    assert "\n" not in text and "Traceback" not in text, text
    assert str(folder) in text, text


def _epoch(folder, split, cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = make_loader(folder, cfg, split=split)
    batches = [(b["index"].clone(), b["labels"].clone()) for b in loader]
    if not batches:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), loader.summary()
    return (torch.cat([i for i, _ in batches]).numpy(), torch.cat([y for _, y in batches]).numpy(),
            loader.summary())


def check_loader(folder, split, truth, **kw) -> str:
    """A full epoch: every event once (or every event of the shards not skipped), or an InputError."""
    try:
        index, labels, summary = _epoch(folder, split, LoaderConfig(**CFG, **kw))
    except InputError as exc:
        _one_line_naming(str(exc), folder)
        return "error"
    total = len(truth["labels"])
    assert index.min(initial=0) >= 0 and index.max(initial=-1) < total
    seen = np.bincount(index, minlength=total)
    assert seen.max(initial=0) <= 1, "an event was delivered twice"
    if not kw.get("skip_bad"):
        assert len(index) == total, "events were lost"
        return "delivered"
    np.testing.assert_array_equal(labels, truth["labels"][index])
    got = [int(seen[a:b].sum()) for a, b in truth["ranges"]]
    assert all(g in (0, b - a) for g, (a, b) in zip(got, truth["ranges"])), "a shard half delivered"
    assert got.count(0) - sum(a == b for a, b in truth["ranges"]) <= len(summary["shards_skipped"])
    assert len(index) + summary["events_in_skipped_shards"] == total, "skipped events not counted"
    return "skipped" if summary["shards_skipped"] else "delivered"


def check_inspect(folder, truth) -> dict | None:
    try:
        report = inspect_shards(folder)
    except InputError as exc:
        _one_line_naming(str(exc), folder)
        return None
    if report["ok"]:
        for split, want in truth.items():
            assert report["splits"][split]["events_read"] == len(want["labels"])
            assert report["splits"][split]["events_per_class_read"] == want["per_class"]
    for problem in report["problems"]:
        _one_line_naming(problem, folder)
    return report


def check_inspect_cli(folder, report) -> None:
    res = subprocess.run([sys.executable, "-m", "engine", "inspect", str(folder), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == (0 if report and report["ok"] else 2), res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert all(line.startswith(f"error: {folder}") for line in lines) and bool(lines) == bool(res.returncode)
    if report is not None:
        assert json.loads(res.stdout)["problems"] == report["problems"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_every_corruption_is_read_exactly_once_or_one_line(pristine, fault, tmp_path):
    root, manifest, truth = pristine
    outcomes = []
    for seed in range(SEEDS_PER_FAULT):
        folder = tmp_path / f"case{seed}"
        shutil.copytree(root, folder)
        split = fault(np.random.default_rng([FAULTS.index(fault), seed]), folder)
        outcomes.append(check_loader(folder, split, truth[split]))
        outcomes.append(check_loader(folder, split, truth[split], skip_bad=True))
        if seed == 1:                   # errors found in a DataLoader worker process
            outcomes.append(check_loader(folder, split, truth[split], workers=1))
        if seed == 0 and HAS_DALI:
            outcomes.append(check_loader(folder, split, truth[split], backend="dali",
                                         dali_initial_fill=4))
        report = check_inspect(folder, truth)
        if seed == 0 and FAULTS.index(fault) % SUBPROCESS_FAULTS == 0:
            check_inspect_cli(folder, report)
        shutil.rmtree(folder)
    if fault not in (flip_tar_header, flip_anywhere, manifest_delete_key, forge_other_class):
        assert "error" in outcomes, f"{fault.__name__} was never found out"


def test_forged_labels_are_faults_of_their_block(pristine, tmp_path):
    root, _, truth = pristine
    for outside in (True, False):
        folder = tmp_path / f"forged{outside}"
        shutil.copytree(root, folder)
        split = _forge(np.random.default_rng(3), folder, outside)
        strict = check_loader(folder, split, truth[split])
        assert strict == ("error" if outside else "delivered")
        assert check_loader(folder, split, truth[split], skip_bad=True) == "skipped"
        assert not check_inspect(folder, truth)["ok"]
