"""Schema version 2 (the fat jet's msoftdrop and parton) beside files of version 1: read, summarised,
sharded and loaded with msoftdrop = NaN and parton = 0; other versions and old shards refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.data import shards
from engine.data.canonical import parquet_io, schema
from engine.data.canonical.summary import format_summary, summarize
from engine.data.generation import synthetic
from engine.data.loader import LoaderConfig, make_loader
from engine.data.shards.inspect import format_inspection, inspect_shards
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
V1_FATJET = schema.OLDER[1]["fatjets"]


def _table(process: str, n: int, seed: int = 1) -> pa.Table:
    return schema.fatjets_table(synthetic.synthetic_fatjets(process, n, seed), process, ["qcd", "top"])


def _as_version_1(table: pa.Table) -> pa.Table:
    fat = table.column("fatjet").combine_chunks()
    old = pa.StructArray.from_arrays([fat.field(k) for k in schema.FATJET_FIELDS_V1],
                                     fields=list(V1_FATJET.field("fatjet").type))
    return table.set_column(table.schema.get_field_index("fatjet"), V1_FATJET.field("fatjet"), old)


def write_version_1(path: Path, table: pa.Table, monkeypatch) -> None:
    """A fat-jet file exactly as the engine wrote it before schema version 2."""
    with monkeypatch.context() as m:
        m.setattr(schema, "SCHEMA_VERSION", 1)
        m.setitem(schema.KINDS, "fatjets", V1_FATJET)
        parquet_io.write_table(path, _as_version_1(table), "fatjets", ["qcd", "top"], {"tool": "v1"})


@pytest.fixture
def mixed(tmp_path, monkeypatch):
    """qcd.parquet of version 1, top.parquet of version 2; the tables as generated."""
    tables = {"qcd": _table("qcd", 60), "top": _table("top", 60)}
    write_version_1(tmp_path / "in" / "qcd.parquet", tables["qcd"], monkeypatch)
    parquet_io.write_table(tmp_path / "in" / "top.parquet", tables["top"], "fatjets", ["qcd", "top"], {})
    return tmp_path, tables


def test_version_1_reads_with_nan_softdrop_and_parton_0_every_way(mixed):
    folder, tables = mixed
    path = folder / "in" / "qcd.parquet"
    pf, meta = parquet_io.open_parquet(path)
    assert meta["schema_version"] == 1 and pf.schema_arrow.remove_metadata().equals(V1_FATJET)
    reads = [parquet_io.read(path), pf.read_row_group(0), pf.read_row_groups([0]),
             pa.Table.from_batches(list(parquet_io.iter_batches(path, batch_rows=25)))]
    for table in reads:
        assert table.schema.remove_metadata().equals(schema.FATJET_SCHEMA)
        fat = table.column("fatjet").combine_chunks()
        assert np.isnan(fat.field("msoftdrop").to_numpy()).all()
        assert (fat.field("parton").to_numpy() == 0).all()
        want = tables["qcd"].column("fatjet").combine_chunks()
        for key in schema.FATJET_FIELDS_V1:
            assert fat.field(key).equals(want.field(key))
        assert table.column("constituents").equals(tables["qcd"].column("constituents"))
    only = next(parquet_io.iter_batches(path, columns=["label"]))          # no fatjet column read
    assert only.schema.names == ["label"]
    current, meta2 = parquet_io.open_parquet(folder / "in" / "top.parquet")
    assert meta2["schema_version"] == schema.SCHEMA_VERSION == 2
    assert current.read().column("fatjet").equals(tables["top"].column("fatjet"))


def test_version_1_and_2_inputs_shard_and_load_together(mixed):
    folder, tables = mixed
    shards.write_shards([folder / "in"], folder / "shards",
                        shards.ShardOptions(seed=3, events_per_member=16, split=(1.0, 0.0, 0.0)))
    loader = make_loader(folder / "shards", LoaderConfig(batch_size=50, shuffle=False), split="train")
    batches = list(loader)
    got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in ("labels", "msoftdrop", "parton")}
    assert batches[0]["msoftdrop"].dtype.is_floating_point and str(batches[0]["parton"].dtype) == "torch.int32"
    qcd, top = got["labels"] == 0, got["labels"] == 1
    assert qcd.sum() == top.sum() == 60
    assert np.isnan(got["msoftdrop"][qcd]).all() and (got["parton"][qcd] == 0).all()
    want = tables["top"].column("fatjet").combine_chunks()
    assert sorted(got["msoftdrop"][top].tolist()) == sorted(want.field("msoftdrop").to_numpy().tolist())
    assert (got["parton"][top] == 6).all()
    report = inspect_shards(folder / "shards")
    train = report["splits"]["train"]
    assert train["msoftdrop"]["n"] == 60 and train["msoftdrop"]["not_recorded"] == 60
    assert train["partons"] == {"0": 60, "6": 60} and report["ok"]
    text = format_inspection(report)
    assert "msoftdrop mean" in text and "60 jets without (version-1 inputs)" in text
    assert "parton    0: 60 (none), 6: 60" in text


def test_parquet_summary_tells_softdrop_mass_and_partons(mixed):
    folder, tables = mixed
    summary = summarize(folder / "in")
    assert summary["classes"]["qcd"]["fatjet_msoftdrop"] == {"n": 0}           # not recorded
    assert summary["classes"]["qcd"]["partons"] == {"0": 60}
    top = summary["classes"]["top"]
    assert top["fatjet_msoftdrop"]["n"] == 60 and top["partons"] == {"6": 60}
    assert top["fatjet_msoftdrop"]["max"] <= top["fatjet_mass"]["max"]
    text = format_summary(summary)
    assert "fatjet_msoftdrop" in text and "parton             6: 60" in text
    assert "fatjet_msoftdrop   not recorded (files of schema version 1)" in text
    proc = subprocess.run([sys.executable, "-m", "engine", "inspect", str(folder / "in")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "parton             0: 60 (none)" in proc.stdout, proc.stderr


def test_other_schema_versions_are_one_line_errors(tmp_path, monkeypatch):
    path = tmp_path / "v3.parquet"
    with monkeypatch.context() as m:
        m.setattr(schema, "SCHEMA_VERSION", 3)
        parquet_io.write_table(path, _table("qcd", 3), "fatjets", ["qcd", "top"], {})
    with pytest.raises(InputError, match=r"schema version 3 \(this engine reads versions 1, 2\)"):
        parquet_io.open_parquet(path)
    # a version-2 file with version-1 columns (or the reverse) is not a file of either
    with monkeypatch.context() as m:
        m.setitem(schema.KINDS, "fatjets", V1_FATJET)
        parquet_io.write_table(tmp_path / "mixed.parquet", _as_version_1(_table("qcd", 3)), "fatjets",
                               ["qcd", "top"], {})
    with pytest.raises(InputError, match="canonical types"):
        parquet_io.open_parquet(tmp_path / "mixed.parquet")


def test_nan_means_not_recorded_only_in_msoftdrop():
    table = _table("qcd", 4)
    fat = table.column("fatjet").combine_chunks()

    def with_field(name, value):
        arrays = [fat.field(k).to_numpy().copy() for k in schema.FATJET_FIELDS]
        arrays[list(schema.FATJET_FIELDS).index(name)][1] = value
        new = pa.StructArray.from_arrays([pa.array(a) for a in arrays], fields=list(fat.type))
        return table.set_column(table.schema.get_field_index("fatjet"), "fatjet", new)

    parquet_io.check_finite(with_field("msoftdrop", np.nan), "x.parquet")
    for name, value in (("msoftdrop", np.inf), ("mass", np.nan), ("pt", -np.inf)):
        with pytest.raises(InputError, match=f"'fatjet.{name}'"):
            parquet_io.check_finite(with_field(name, value), "x.parquet")


def test_shards_of_an_older_format_ask_for_a_rebuild(tmp_path):
    root = tmp_path / "shards"
    synthetic.write_synthetic(tmp_path / "in", "fatjets", 20, seed=1)
    shards.write_shards([tmp_path / "in"], root, shards.ShardOptions(seed=1))
    manifest = json.loads((root / "manifest.json").read_text())
    for key, value in (("block_format_version", 1), ("schema_version", 1)):
        (root / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(InputError, match=f"{key} 1 .*rebuild the shards .*`python -m engine shard`"):
            make_loader(root, LoaderConfig(batch_size=8))
    (root / "manifest.json").write_text(json.dumps({**manifest, "block_format_version": 3}))
    with pytest.raises(InputError, match=r"block_format_version 3 \(this engine reads 2\)$"):
        make_loader(root, LoaderConfig(batch_size=8))
