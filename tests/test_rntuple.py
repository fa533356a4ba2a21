"""RNTuple inputs for `convert`: the same events as a TTree and as an RNTuple give the same tables.

Inputs are written here by uproot (tests/rootfiles.py): NanoAOD-style `Events` and Delphes-style
`Delphes`, as collections of records (`Muon.pt`, the layout of CMS's RNTuple NanoAOD output),
as flat fields named like the branches (`Muon_pt`), and with MET as one record per event.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from tests import rootfiles as rf
from engine.data.canonical.selection import PRESETS
from engine.data.conversion import convert as cv
from engine.data.conversion import readers_root as rr
from engine.data.conversion.root_sources import (NTupleSource, cluster_groups, field_names,
                                                 physical_columns, steps)
from engine.errors import InputError

REPO = Path(__file__).resolve().parents[1]
N_EVENTS, CLUSTER = 700, 250
CONTAINER_KEYS = {"tree", "branches", "rntuple", "fields", "btag_branch", "input", "input_bytes"}
"""Provenance that names the input file and its container, so differs between the two."""


def nano_chunks(seed: int = 1) -> list[dict]:
    return list(rf.nanoaod_chunks(N_EVENTS, seed=seed, chunk_events=CLUSTER))


def delphes_chunks() -> list[dict]:
    sizes = [min(CLUSTER, N_EVENTS - start) for start in range(0, N_EVENTS, CLUSTER)]
    return [rf.delphes_branches(n, seed=2 + i) for i, n in enumerate(sizes)]


def flat_fields(chunk: dict) -> dict:
    """Collections as one field per branch (`Muon_pt`: a list of numbers per event)."""
    out = {}
    for name, value in chunk.items():
        if isinstance(value, ak.Array):
            out.update({f"{name}_{f}": value[f] for f in value.fields})
        else:
            out[name] = value
    return out


def met_record(chunk: dict) -> dict:
    """MET as one record per event (`MET.pt`, `MET.phi`), the other singleton layout."""
    out = {k: v for k, v in chunk.items() if k not in ("MET_pt", "MET_phi")}
    return {**out, "MET": ak.zip({"pt": chunk["MET_pt"], "phi": chunk["MET_phi"]})}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rntuple")
    nano, delphes = nano_chunks(), delphes_chunks()
    return {
        "nano_tree": rf.write_root(d / "nano_tree.root", "Events", nano),
        "nano": rf.write_rntuple(d / "nano.root", "Events", nano),
        "nano_flat": rf.write_rntuple(d / "nano_flat.root", "Events", [flat_fields(c) for c in nano]),
        "nano_met_record": rf.write_rntuple(d / "nano_met.root", "Events", [met_record(c) for c in nano]),
        "delphes_tree": rf.write_root(d / "delphes_tree.root", "Delphes", delphes, naming="dotted"),
        "delphes": rf.write_rntuple(d / "delphes.root", "Delphes", delphes),
        "delphes_flat": rf.write_rntuple(d / "delphes_flat.root", "Delphes", [flat_fields(c) for c in delphes]),
    }


def convert(source: Path, out: Path, selection: str = "madrazo2017", step_size: int = 100_000,
            fmt: str = "auto") -> Path:
    cv.convert_file(cv.ConvertJob(source, out, "ttbar", fmt, PRESETS[selection], step_size))
    return out


def engine_meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[b"engine"])


def data_bytes(path: Path) -> bytes:
    """The Parquet file up to its footer: the column chunks, pages and their headers."""
    data = path.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    return data[:len(data) - 8 - footer]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "convert", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


# --- the same events, the same table -------------------------------------------------------

@pytest.mark.parametrize("selection", ["none", "madrazo2017"])
@pytest.mark.parametrize("tree, ntuple", [("nano_tree", "nano"), ("nano_tree", "nano_flat"),
                                          ("nano_tree", "nano_met_record"), ("delphes_tree", "delphes"),
                                          ("delphes_tree", "delphes_flat")])
def test_rntuple_converts_like_the_tree(inputs, tmp_path, tree, ntuple, selection):
    a = convert(inputs[tree], tmp_path / "tree.parquet", selection)
    b = convert(inputs[ntuple], tmp_path / "ntuple.parquet", selection)
    table_a, table_b = pq.read_table(a), pq.read_table(b)
    assert table_b.num_rows == table_a.num_rows > (0 if selection == "madrazo2017" else N_EVENTS - 1)
    assert table_b.replace_schema_metadata(None).equals(table_a.replace_schema_metadata(None))
    assert data_bytes(b) == data_bytes(a)
    meta_a, meta_b = engine_meta(a), engine_meta(b)
    prov_a, prov_b = meta_a.pop("provenance"), meta_b.pop("provenance")
    assert meta_a == meta_b
    assert {k: v for k, v in prov_a.items() if k not in CONTAINER_KEYS} == \
        {k: v for k, v in prov_b.items() if k not in CONTAINER_KEYS}
    assert prov_b["rntuple"] == prov_a["tree"] and "tree" not in prov_b
    assert len(prov_b["fields"]) == len(prov_a["branches"])


def test_provenance_names_the_fields_read(inputs, tmp_path):
    prov = engine_meta(convert(inputs["nano"], tmp_path / "n.parquet"))["provenance"]
    assert prov["rntuple"] == "Events" and prov["btag_branch"] == "Jet.btagDeepFlavB"
    assert "Muon.pt" in prov["fields"] and "MET_pt" in prov["fields"] and "Muon_pt" not in prov["fields"]
    prov = engine_meta(convert(inputs["delphes"], tmp_path / "d.parquet"))["provenance"]
    assert prov["format"] == "delphes" and prov["btag_branch"] == "Jet.BTag"
    assert "Electron.EhadOverEem" not in prov["fields"] and "Jet.Flavor" not in prov["fields"]


@pytest.mark.parametrize("step_size", [37, CLUSTER - 1, CLUSTER, CLUSTER + 1, 2 * CLUSTER, 100_000])
def test_chunks_smaller_or_larger_than_a_cluster(inputs, tmp_path, step_size):
    """Any step gives the tree's chunks, so the same data bytes as the tree at that step, and the
    same table as one chunk."""
    reference = pq.read_table(convert(inputs["nano"], tmp_path / "ref.parquet", "none"))
    out = convert(inputs["nano"], tmp_path / "steps.parquet", "none", step_size=step_size)
    tree = convert(inputs["nano_tree"], tmp_path / "tree.parquet", "none", step_size=step_size)
    assert data_bytes(out) == data_bytes(tree)
    assert pq.read_table(out).replace_schema_metadata(None).equals(reference.replace_schema_metadata(None))
    reader = cv.open_reader(inputs["nano"], "nanoaod", step_size)
    sizes = [len(chunk) for chunk in reader.chunks()]
    reader.close()
    assert sum(sizes) == N_EVENTS and set(sizes[:-1]) <= {step_size} and 0 < sizes[-1] <= step_size


def test_steps_cut_groups_into_equal_chunks():
    groups = [(0, ak.Array(np.arange(5))), (5, ak.Array(np.arange(5, 7))), (7, ak.Array(np.arange(7, 20)))]
    for step in (1, 3, 4, 7, 20, 50):
        chunks = list(steps(iter(groups), step))
        assert [start for start, _ in chunks] == list(range(0, 20, step))
        assert [part.tolist() for _, part in chunks] == [list(range(a, min(a + step, 20)))
                                                         for a in range(0, 20, step)]
    assert list(steps(iter([]), 3)) == []


def test_cluster_groups():
    assert cluster_groups([250, 250, 200], 100_000) == [range(0, 3)]
    assert cluster_groups([250, 250, 200], 500) == [range(0, 2), range(2, 3)]
    assert cluster_groups([250, 250, 200], 499) == [range(0, 1), range(1, 3)]
    assert cluster_groups([250, 250, 200], 1) == [range(0, 1), range(1, 2), range(2, 3)]
    assert cluster_groups([], 10) == []


def test_field_names_offer_branch_names():
    names = field_names(["Muon", "Muon.pt", "MET_pt", "MET", "MET.pt", "Jet.a.b"])
    assert names["Muon_pt"] == "Muon.pt" and names["Muon.pt"] == "Muon.pt"
    assert names["MET_pt"] == "MET_pt"  # a field of that name wins over MET.pt
    assert "Jet_a_b" not in names and names["Jet.a.b"] == "Jet.a.b"


def test_only_the_needed_fields_are_read(tmp_path):
    """A field the converter does not need can be damaged beyond reading: it is never read. The
    same damage to a needed field stops the conversion."""
    good = rf.write_rntuple(tmp_path / "good.root", "Events", with_photons(nano_chunks(seed=4)))
    reference = convert(good, tmp_path / "ref.parquet", "none")
    for field, converts in (("Photon.pt", True), ("Photon.hoe", True), ("Jet.jetId", False)):
        bad = tmp_path / f"bad_{field}.root"
        bad.write_bytes(_garbled_pages(good, field))
        if converts:
            assert data_bytes(convert(bad, tmp_path / "bad.parquet", "none")) == data_bytes(reference)
        else:
            with pytest.raises(InputError, match="cannot read the data") as info:
                convert(bad, tmp_path / "bad.parquet", "none")
            assert str(bad) in str(info.value) and "\n" not in str(info.value)


def _garbled_pages(path: Path, field: str) -> bytes:
    """The file's bytes with every page of `field` (all compressed) overwritten by seeded noise."""
    data = bytearray(path.read_bytes())
    with uproot.open(path) as f:
        ntuple = f["Events"]
        fid = ntuple[field].field_id
        columns = [i for i, c in enumerate(ntuple.column_records) if c.field_id == fid]
        rng = np.random.default_rng(5)
        for cluster in ntuple.page_link_list:
            for i in columns:
                for page in cluster[i].pages:
                    start, n = page.locator.offset, page.locator.num_bytes
                    assert n < page.num_elements * ntuple.column_records[i].nbits // 8  # compressed
                    data[start + 9:start + n] = rng.bytes(n - 9)  # keep the compression header
    return bytes(data)


def test_empty_rntuple_converts_to_an_empty_file(tmp_path):
    b = rf.nanoaod_branches(5, seed=3)
    path = tmp_path / "empty.root"
    with uproot.recreate(path) as out:
        out.mkrntuple("Events", ak.zip(b, depth_limit=1).layout.form)
    out = convert(path, tmp_path / "empty.parquet", "none")
    assert pq.read_table(out).num_rows == 0 and engine_meta(out)["provenance"]["events_read"] == 0


# --- detection and bad input: one line, exit 2 ---------------------------------------------

def test_tree_names_list_rntuples(inputs):
    for key, name in (("nano", "Events"), ("delphes", "Delphes")):
        root, _ = rr.open_tree(inputs[key])
        try:
            assert rr.tree_names(root, inputs[key]) == [name]
        finally:
            root.file.close()
        assert cv.detect_format(inputs[key]) == {"Events": "nanoaod", "Delphes": "delphes"}[name]


def test_format_auto_detects_an_rntuple(inputs, tmp_path):
    proc = run_cli(inputs["nano"], inputs["delphes"], "--out", tmp_path / "out", "--label", "ttbar",
                   "--format", "auto", "--selection", "none", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert [(r["format"], r["events_read"]) for r in record["converted"]] == [("nanoaod", N_EVENTS),
                                                                             ("delphes", N_EVENTS)]


def _without(field: str):
    def edit(chunk):
        collection, _, sub = field.partition(".")
        if sub:
            chunk[collection] = chunk[collection][[f for f in chunk[collection].fields if f != sub]]
        else:
            del chunk[collection]
        return chunk
    return edit


def _jagged_met(chunk):
    two = np.full(len(chunk["run"]), 2)
    del chunk["MET_pt"], chunk["MET_phi"]
    return {**chunk, "MET": ak.zip({"pt": ak.unflatten(np.ones(2 * len(two), np.float32), two),
                                    "phi": ak.unflatten(np.zeros(2 * len(two), np.float32), two)})}


def _float_jet_id(chunk):
    chunk["Jet"] = ak.with_field(chunk["Jet"], ak.values_astype(chunk["Jet"].jetId, np.float32), "jetId")
    return chunk


def _flat_muon_charge(chunk):
    chunk = _without("Muon.charge")(chunk)
    return {**chunk, "Muon_charge": np.ones(len(chunk["run"]), np.int32)}


def _nan_met(chunk):
    chunk["MET_pt"] = chunk["MET_pt"].copy()
    chunk["MET_pt"][3] = np.nan
    return chunk


def _nested_jet_pt(chunk):
    pt = chunk["Jet"].pt
    chunk["Jet"] = ak.with_field(chunk["Jet"], ak.unflatten(ak.unflatten(ak.flatten(pt), 1), ak.num(pt)), "pt")
    return chunk


def _optional_met(chunk):
    return {**chunk, "MET_pt": ak.Array([None, *chunk["MET_pt"][1:].tolist()])}


def _optional_jet_pt(chunk):
    pt = ak.mask(chunk["Jet"].pt, chunk["Jet"].pt > 0)  # every value present, the type optional
    chunk["Jet"] = ak.with_field(chunk["Jet"], pt, "pt")
    return chunk


def _flat_with_short_eta(chunk):
    """Flat fields, with one muon's eta missing: `Muon_pt` and `Muon_eta` disagree."""
    chunk = flat_fields(chunk)
    eta = chunk["Muon_eta"]
    first = int(np.argmax(ak.num(eta) > 0))
    chunk["Muon_eta"] = ak.concatenate([eta[:first], eta[first:first + 1, 1:], eta[first + 1:]])
    return chunk


BAD_NANO = {
    "missing_field": (_without("MET_phi"), [], "RNTuple 'Events' has no field 'MET_phi'"),
    "missing_subfield": (_without("Muon.eta"), [], "RNTuple 'Events' has no field 'Muon_eta'"),
    "missing_btag": (_without("Jet.btagDeepFlavB"), [], "RNTuple 'Events' has no b-tag field"),
    "jagged_met": (_jagged_met, [], "field 'MET.pt' must hold one number per event"),
    "flat_muon_charge": (_flat_muon_charge, [], "field 'Muon_charge' must hold a list per event"),
    "float_jet_id": (_float_jet_id, [], "field 'Jet.jetId' holds float32 values, expected integers"),
    "nested_jet_pt": (_nested_jet_pt, [], "field 'Jet.pt' holds nested lists"),
    "nan": (_nan_met, ["--selection", "none"], "NaN or infinite value(s) in field 'MET_pt'"),
    "optional_met": (_optional_met, [], "field 'MET_pt' holds optional values (std::optional)"),
    "optional_jet_pt": (_optional_jet_pt, [], "field 'Jet.pt' holds optional values (std::optional)"),
    "counts_disagree": (_flat_with_short_eta, [],
                        "field 'Muon_pt' and field 'Muon_eta' have different numbers of entries per event"),
    "string_met": (lambda c: {**c, "MET_pt": ak.Array(["a"] * len(c["run"]))}, [],
                   "field 'MET_pt' holds <U1 values, expected numbers"),
}


@pytest.mark.parametrize("case", list(BAD_NANO))
def test_bad_rntuple_is_one_line_exit_2(tmp_path, capsys, case):
    from engine.__main__ import main

    edit, options, words = BAD_NANO[case]
    source = rf.write_rntuple(tmp_path / f"{case}.root", "Events",
                              [edit(rf.nanoaod_branches(40, seed=12))])
    code = main(["convert", str(source), "--out", str(tmp_path / "out"), "--label", "ttbar", *options])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {source}: "), lines
    assert words in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_delphes_rntuple_checks(tmp_path):
    b = rf.delphes_branches(30, seed=5)
    b["Jet"] = ak.with_field(b["Jet"], ak.values_astype(b["Jet"].BTag, np.float32), "BTag")
    source = rf.write_rntuple(tmp_path / "float_btag.root", "Delphes", [b])
    with pytest.raises(InputError, match="field 'Jet.BTag' holds float32 values, expected integers"):
        convert(source, tmp_path / "x.parquet", "none")
    b = rf.delphes_branches(30, seed=5)
    del b["MissingET"]
    source = rf.write_rntuple(tmp_path / "no_met.root", "Delphes", [b])
    with pytest.raises(InputError, match="RNTuple 'Delphes' has no field 'MissingET.MET', 'MissingET.Phi'"):
        convert(source, tmp_path / "x.parquet", "none")


def test_other_rntuple_name_is_not_a_format(tmp_path):
    source = rf.write_rntuple(tmp_path / "other.root", "Ntuple", [rf.nanoaod_branches(10, seed=9)])
    proc = run_cli(source, "--out", tmp_path / "out", "--label", "ttbar")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no 'Events' (NanoAOD) or 'Delphes' tree (trees in the file: Ntuple)" in proc.stderr
    with pytest.raises(InputError, match="no tree 'Events' \\(trees in the file: Ntuple\\)"):
        convert(source, tmp_path / "x.parquet", fmt="nanoaod")


def test_truncated_rntuple_is_one_line_exit_2(inputs, tmp_path, capsys):
    from engine.__main__ import main

    data = inputs["nano"].read_bytes()
    for size in (len(data) // 2, len(data) - 1, 300):
        cut = tmp_path / f"cut{size}.root"
        cut.write_bytes(data[:size])
        args = [cut, "--out", tmp_path / "out", "--label", "ttbar"]
        if size == 300:  # once as a user runs it
            proc = run_cli(*args)
            code, err = proc.returncode, proc.stderr
        else:
            code, err = main(["convert", *map(str, args)]), capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"error: {cut}: ") and ("truncated" in lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, field", [("nano", "Muon.pt"), ("nano_flat", "Muon_pt")])
def test_page_beyond_the_end_of_the_file_names_the_field(inputs, tmp_path, key, field):
    """The check behind the header's length: a page that lies past the file's end, be it of a
    subfield (`Muon.pt`) or the items of a `std::vector<float>` field (`Muon_pt`)."""
    data = inputs[key].read_bytes()
    with uproot.open(inputs[key]) as f:
        ntuple = f["Events"]
        run = physical_columns(ntuple, ntuple["run"].field_id)
        size = max(p.locator.offset + p.locator.num_bytes for c in ntuple.page_link_list
                   for i in run for p in c[i].pages)  # the file up to the last page of `run`
        cut = tmp_path / "cut.root"
        cut.write_bytes(data[:size])
        source = NTupleSource(ntuple, cut)
        assert source.check_not_truncated(["run"]) is None
        problem = source.check_not_truncated(["run", "Muon_pt", "Jet_pt"])
    assert problem.startswith(f"truncated file: field '{field}' needs byte ")
    assert problem.endswith(f"but the file has {size:,} bytes")


def test_physical_columns_of_a_vector_field(inputs):
    """A `std::vector<float>` field's numbers live in its item field's column, its offsets in its own."""
    with uproot.open(inputs["nano_flat"]) as f:
        ntuple = f["Events"]
        columns = physical_columns(ntuple, ntuple["Muon_pt"].field_id)
        assert len(columns) == 2
        assert {ntuple.column_records[i].field_id for i in columns} == \
            {ntuple["Muon_pt"].field_id, ntuple["Muon_pt"].field_id + 1}


# --- page checksums ------------------------------------------------------------------------

def with_photons(chunks: list[dict]) -> list[dict]:
    """A collection the converter does not read, with compressible (so compressed) pages."""
    return [{**c, "Photon": ak.zip({"pt": np.round(c["Jet"].pt), "hoe": c["Jet"].jetId})} for c in chunks]


@pytest.fixture(scope="module")
def checksummed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("checksums")
    return rf.write_rntuple(d / "ck.root", "Events", with_photons(nano_chunks(seed=4)), page_checksums=True)


def _page(path: Path, field: str, cluster: int) -> tuple[int, int]:
    """(offset, size) of the first page in `cluster` of `field`'s own column (a collection's offsets)."""
    with uproot.open(path) as f:
        ntuple = f["Events"]
        fid = ntuple[field].field_id
        column = next(i for i, c in enumerate(ntuple.column_records) if c.field_id == fid)
        page = ntuple.page_link_list[cluster][column].pages[0]
        assert page.has_checksum
        return page.locator.offset, page.locator.num_bytes


def test_checksummed_pages_convert_like_plain_ones(checksummed, tmp_path):
    plain = rf.write_rntuple(tmp_path / "plain.root", "Events", with_photons(nano_chunks(seed=4)))
    for step in (37, 100_000):
        out = convert(checksummed, tmp_path / "ck.parquet", "none", step_size=step)
        assert data_bytes(out) == data_bytes(convert(plain, tmp_path / "plain.parquet", "none", step_size=step))


@pytest.mark.parametrize("field, where, named", [
    ("Jet.pt", "payload", "Jet.pt"), ("Jet.pt", "checksum", "Jet.pt"),
    ("Muon", "payload", "Muon.pt"),  # the offsets every Muon field needs: the first one read is named
    ("Photon.pt", "payload", None),  # not read, not checked
])
def test_a_flipped_byte_in_a_page_is_caught_by_its_checksum(checksummed, tmp_path, field, where, named):
    reference = convert(checksummed, tmp_path / "ref.parquet", "none")
    offset, size = _page(checksummed, field, cluster=1)
    data = bytearray(checksummed.read_bytes())
    data[offset + (size // 2 if where == "payload" else size + 3)] ^= 0x10
    bad = tmp_path / "flipped.root"
    bad.write_bytes(bytes(data))
    if named is None:
        assert data_bytes(convert(bad, tmp_path / "bad.parquet", "none")) == data_bytes(reference)
        return
    with pytest.raises(InputError) as info:
        convert(bad, tmp_path / "bad.parquet", "none")
    assert str(info.value) == f"{bad}: corrupt page of field '{named}' in cluster 1 (its checksum does not match)"
    assert not (tmp_path / "bad.parquet").exists()


@pytest.mark.parametrize("page_checksums", [False, True])
def test_corrupt_rntuples_convert_or_stop_with_one_line(tmp_path, page_checksums):
    """Seeded flips, truncations, deletions, insertions, overwrites of an RNTuple file: each one
    converts or is one line naming the file, and leaves nothing. With page checksums (as ROOT
    writes them) whatever converts is the original's data; uproot's pages have none, so a flipped
    byte in an uncompressed page can there become a wrong but plausible value."""
    source = rf.write_rntuple(tmp_path / "src.root", "Events", [rf.nanoaod_branches(150, seed=21)],
                              page_checksums=page_checksums)
    reference = data_bytes(convert(source, tmp_path / "ref.parquet", "none"))
    original = source.read_bytes()
    rng = np.random.default_rng(33)
    outcomes = {"same": 0, "different": 0, "error": 0}
    for case in range(150):
        description, data = rf.corrupt(original, rng)
        bad = tmp_path / "bad.root"
        bad.write_bytes(data)
        out = tmp_path / "out" / f"case{case}.parquet"
        try:
            convert(bad, out, "none")
            outcomes["same" if data_bytes(out) == reference else "different"] += 1
        except InputError as exc:
            outcomes["error"] += 1
            assert str(bad) in str(exc) and "\n" not in str(exc), (description, str(exc))
            assert not out.exists() and not list(out.parent.glob(".*")), description
    assert outcomes["error"] > 100, outcomes
    if page_checksums:
        assert outcomes["different"] == 0, outcomes
