import json
import subprocess
import sys

import pytest

from engine.data.canonical import parquet_io, schema
from engine.data.canonical.summary import summarize
from engine.data.shards.inspect import format_inspection, inspect_shards
from tests.events import synthetic_events, synthetic_shards


def _write(path, n, process, seed):
    table = schema.events_table(synthetic_events(n, seed), process, [process])
    parquet_io.write_table(path, table, "events", [process], {"tool": "test"})
    return table


def test_summary_counts_classes_and_objects(tmp_path):
    a = _write(tmp_path / "a.parquet", 120, "ttbar", 1)
    _write(tmp_path / "b.parquet", 80, "dy", 2)
    summary = summarize(tmp_path)
    assert summary["events"] == 200
    assert summary["classes"]["ttbar"]["events"] == 120 and summary["classes"]["dy"]["events"] == 80
    jets = a.column("jets").to_pylist()
    assert summary["classes"]["ttbar"]["n_jets"]["mean"] == sum(map(len, jets)) / 120
    assert summary["classes"]["ttbar"]["jets_pt"]["max"] == max(j["pt"] for ev in jets for j in ev)


def test_cli_json_and_bad_input(tmp_path):
    _write(tmp_path / "a.parquet", 10, "wjets", 3)
    out = subprocess.run([sys.executable, "-m", "engine", "inspect", str(tmp_path), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["classes"]["wjets"]["events"] == 10
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    res = subprocess.run([sys.executable, "-m", "engine", "inspect", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and str(bad) in res.stderr and "Traceback" not in res.stderr


def _inspect(*args):
    return subprocess.run([sys.executable, "-m", "engine", "inspect", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_shard_problems_exit_2_one_line_each_and_json_stays_readable(tmp_path):
    root = synthetic_shards(tmp_path, 60, seed=1, events_per_member=20, shard_size_mb=0.004)
    good = _inspect(root)
    assert good.returncode == 0 and good.stderr == "" and "ok: everything matches" in good.stdout
    tar = sorted((root / "train").glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:-700])
    manifest = json.loads((root / "manifest.json").read_text())
    total = manifest["splits"]["train"]["events"]
    lost = next(s["events"] for s in manifest["splits"]["train"]["shards"] if s["name"] == tar.name)
    res = _inspect(root, "--json")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    report = json.loads(res.stdout)
    assert not report["ok"] and report["splits"]["train"]["events_read"] == total - lost
    lines = res.stderr.strip().splitlines()
    assert lines == [f"error: {p}" for p in report["problems"]]
    assert lines[0].startswith(f"error: {tar}: ") and "truncated" in lines[0]
    assert f"read {total - lost} events, the manifest says {total}" in lines[1]
    split = inspect_shards(root / "train")
    assert split["problems"] == report["problems"] and "NOT OK: 3 problems" in format_inspection(split)
