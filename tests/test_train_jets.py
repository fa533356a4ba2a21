"""benchmarks/train_jets.py in its quick mode on a few real Pythia jets: the records are well formed,
one set per model, measured on the hbb and qcd jets it generated and sharded."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(work: Path, out: Path, models: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.train_jets", "--quick", "--jets", "40",
                           "--models", models, "--work", str(work), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quick_jet_benchmark_writes_finite_records_per_model(tmp_path):
    out = tmp_path / "jets.json"
    done = run_bench(tmp_path / "work", out, "deepsets,gbt")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = json.loads(out.read_text())
    names = ["hbb_auc", "rejection_at_eps_s_0.5", "rejection_at_eps_s_0.3", "test_accuracy", "train_seconds",
             "train_events_per_s"]
    extra = [("gbt", "feature_seconds")]
    expected = [("gbt", n) for n in names] + extra + [("deepsets", n) for n in names]
    assert [(r["params"]["model"], r["name"]) for r in records] == expected
    for r in records:
        assert set(r) == {"name", "value", "unit", "params"} and math.isfinite(r["value"]), r
        assert r["params"]["test_events"] > 0 and r["params"]["jets_per_class_generated"] == 40
    assert 0 <= records[0]["value"] <= 1
    manifest = json.loads((tmp_path / "work" / "shards" / "manifest.json").read_text())
    assert manifest["kind"] == "fatjets" and manifest["class_names"] == ["hbb", "qcd"]
