"""The H->bb jet study's plumbing on small synthetic fat-jet shards: gbt on jet substructure, set
models reading constituents without being told, and configs/hbb_sets.sweep.yaml run end to end."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine.data.substructure import JET_FEATURES
from engine.training.config import load_config
from tests.events import synthetic_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def jet_shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("jets"), 120, seed=2, kind="fatjets", events_per_member=64)


def test_gbt_on_fat_jets_fits_substructure_features_and_evaluates(jet_shards, tmp_path):
    from engine.data.loader import LoaderConfig, make_loader
    from engine.evaluate import evaluate, load_trained
    from engine.train import main
    from engine.training.gbt import gbt_features
    out = tmp_path / "gbt"
    assert main([f"data.shards={jet_shards}", "data.signal=top", "model.name=gbt", f"output_dir={out}",
                 "model.options={max_iter: 30}"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["input_kind"] == "constituents" and run["dataset_kind"] == "fatjets"
    assert load_trained(out).model.n_features_in_ == len(JET_FEATURES)
    batch = next(iter(make_loader(jet_shards, LoaderConfig(batch_size=16, shuffle=False), split="test")))
    features = gbt_features(batch)
    assert features.shape == (16, len(JET_FEATURES)) and np.isfinite(features).all()
    np.testing.assert_array_equal(features[:, 3], batch["counts"].numpy())
    # the synthetic classes differ only in their number of constituents (20-60 and 40-80)
    metrics = evaluate(out, jet_shards, tmp_path / "test")
    assert metrics["accuracy"] > 0.7 and metrics["roc_auc_one_vs_rest"]["top"] > 0.8     # counts overlap: 0.75 at best


def test_a_set_model_reads_constituents_in_training_evaluation_and_prediction(jet_shards, tmp_path, capsys):
    from engine.__main__ import main as cli
    from engine.train import main
    out = tmp_path / "deepsets"
    args = [f"data.shards={jet_shards}", "data.signal=top", "model.name=deepsets", f"output_dir={out}",
            "train.epochs=1", "train.batch_size=32"]
    assert main(args) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["options"] == {"inputs": "constituents"}
    assert json.loads((out / "run.json").read_text())["input_kind"] == "constituents"
    assert main(args) == 0                     # the same command again: the same run, nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert cli(["evaluate", "--checkpoint", str(out), "--shards", str(jet_shards), "--out", str(tmp_path / "e")]) == 0
    assert cli(["predict", "--checkpoint", str(out), "--shards", str(jet_shards), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "e" / "metrics.json").is_file() and (tmp_path / "p" / "predictions.parquet").is_file()
    # an explicit wrong kind stays an error naming the key
    code = main([*args[:-2], f"output_dir={tmp_path / 'wrong'}", "model.options.inputs=objects"])
    assert code == 2 and "model.options.inputs: deepsets reads objects" in capsys.readouterr().err


def test_the_hbb_sweep_lists_every_model_family():
    from engine.sweep import load_sweep, points
    cfg, base = load_sweep(ROOT / "configs" / "hbb_sets.sweep.yaml")
    names = [p.name for p in points(cfg)]
    assert names == ["cvn", "small_cnn", "deepsets", "set_transformer", "ffn", "particlenet", "part", "gbt"]
    assert load_config(base).render.preset == "jet"


@pytest.mark.slow
def test_the_hbb_sweep_runs_end_to_end_on_small_shards(jet_shards, tmp_path):
    from engine.sweep import run_sweep
    sweep = yaml.safe_load((ROOT / "configs" / "hbb_sets.sweep.yaml").read_text())
    sweep.update(base=str(ROOT / "configs" / sweep["base"]), output_root=str(tmp_path / "runs"),
                 fixed={"data.shards": str(jet_shards), "data.signal": "top", "train.epochs": 1,
                        "train.max_steps": 2, "train.batch_size": 32, "train.warmup_steps": 0,
                        "render.size_px": 16})
    path = tmp_path / "hbb.sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    rows = list(csv.DictReader(run_sweep(path, launcher=sys.executable).open()))
    assert [r["run"] for r in rows] == ["cvn", "small_cnn", "deepsets", "set_transformer", "ffn",
                                       "particlenet", "part", "gbt"]
    for row in rows:
        assert row["status"] == "ok", row
        assert 0 <= float(row["signal_auc"]) <= 1, row
        # empty where no background jet passes (a rejection beyond the test's background jets)
        assert row["rejection_at_0.5"] == "" or float(row["rejection_at_0.5"]) >= 1, row
    for name in ("deepsets", "set_transformer", "ffn", "particlenet", "part"):
        config = yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())
        assert config["model"]["options"]["inputs"] == "constituents"
    small_cnn = yaml.safe_load((tmp_path / "runs" / "small_cnn" / "config.yaml").read_text())
    assert small_cnn["model"]["options"] == {"in_chans": 1}


def test_gbt_features_in_chunks_equal_the_features_of_all_jets_at_once(monkeypatch):
    import torch
    from engine.training import gbt
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(5):
        counts = rng.integers(0, 40, 16)
        constituents = np.zeros((16, 40, 5), np.float32)
        for i, n in enumerate(counts):
            constituents[i, :n] = np.stack([rng.exponential(20, n), rng.normal(0, 0.3, n), rng.normal(3.0, 0.3, n),
                                            rng.integers(-1, 2, n), rng.choice([211, 22, 11], n)], 1)
        fatjet = np.stack([rng.uniform(300, 600, 16), rng.normal(0, 1, 16), np.full(16, 3.0),
                           rng.uniform(20, 200, 16)], 1).astype(np.float32)
        batches.append({"constituents": torch.from_numpy(constituents), "counts": torch.from_numpy(counts),
                        "fatjet": torch.from_numpy(fatjet), "labels": torch.from_numpy(rng.integers(0, 2, 16))})
    whole, labels = gbt.collect(batches)
    monkeypatch.setattr(gbt, "CHUNK_EVENTS", 20)
    chunked, chunk_labels = gbt.collect(batches)
    assert whole.shape == (80, len(JET_FEATURES)) and np.array_equal(labels, chunk_labels)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)
