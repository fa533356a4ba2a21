import json
import subprocess
import sys

from engine.data import parquet_io, schema
from engine.data.summary import summarize
from tests.events import synthetic_events


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
