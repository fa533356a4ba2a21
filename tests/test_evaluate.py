"""evaluate / predict on a trained model and the gradient-boosted-tree baseline."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.data import objects
from engine.evaluate import dimuon_mass, evaluate, predict
from engine.training.config import load_config
from tests.events import reset_accelerate, synthetic_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    synthetic_shards(folder, 200, seed=1, events_per_member=128)
    from engine.train import train
    from engine.training.gbt import train_gbt
    base = [f"data.shards={folder / 'shards'}", "data.signal=ttbar", "train.batch_size=64"]
    train(load_config(None, base + [f"output_dir={folder / 'deepsets'}", "model.name=deepsets",
                                     "train.epochs=3", "train.lr=0.003"]))
    reset_accelerate()
    train(load_config(None, base + [f"output_dir={folder / 'small_cnn'}", "model.name=small_cnn",
                                     "render.size_px=32", "render.dtype=bfloat16", "train.mixed_precision=bf16"]))
    reset_accelerate()
    train_gbt(load_config(None, base + [f"output_dir={folder / 'gbt'}", "model.name=gbt",
                                         "model.options={max_iter: 50}"]))
    return folder


@pytest.mark.parametrize("model", ["deepsets", "gbt"])
def test_evaluate_writes_metrics_and_plots(trained, tmp_path, model):
    metrics = evaluate(trained / model, trained / "shards", tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] > 0.5
    cm = np.array(saved["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == saved["events"]
    assert np.trace(cm) / cm.sum() == pytest.approx(saved["accuracy"])
    assert set(saved["roc_auc_one_vs_rest"]) == {"dy", "ttbar", "wjets"} and saved["signal"] == "ttbar"
    for name in ("confusion.png", "roc.png", "scores.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_a_cnn_trained_on_bfloat16_images_evaluates_as_in_its_run(trained, tmp_path):
    """bf16 images (as in the studies' configs) into float32 weights under the run's autocast: the
    validation split scores as the run's own last validation did."""
    metrics = evaluate(trained / "small_cnn", trained / "shards", tmp_path, split="val")
    val = json.loads((trained / "small_cnn" / "run.json").read_text())["val"]
    assert metrics["events"] == val["events"]
    assert metrics["accuracy"] == pytest.approx(val["accuracy"], abs=1.01 / val["events"])


def test_predict_writes_scores_in_split_order(trained, tmp_path):
    path = predict(trained / "deepsets", trained / "shards", tmp_path)
    table = pq.read_table(path)
    scores = np.stack([table.column(f"score_{c}").to_numpy() for c in ("dy", "ttbar", "wjets")], 1)
    assert np.allclose(scores.sum(1), 1, atol=1e-5)
    assert (table.column("predicted").to_numpy() == scores.argmax(1)).all()
    assert sorted(table.column("index").to_pylist()) == list(range(table.num_rows))
    assert (tmp_path / "dimuon_mass.png").is_file()


def test_dimuon_mass_of_two_back_to_back_muons():
    types = np.array([[objects.MUON, objects.JET, objects.MUON, objects.MET], [objects.MUON, 3, 5, 0]], np.int8)
    feats = np.zeros((2, 4, 6), np.float32)
    feats[0, 0, :4] = [45.0, 0.0, 0.0, 0.10566]
    feats[0, 2, :4] = [45.0, 0.0, np.pi, 0.10566]
    mass = dimuon_mass(types, feats)
    assert mass[0] == pytest.approx(90.0, rel=1e-4) and np.isnan(mass[1])


def test_evaluate_on_other_classes_is_a_clear_error(trained, tmp_path):
    synthetic_shards(tmp_path, 50, seed=2, kind="fatjets")
    res = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--checkpoint", str(trained / "deepsets"),
                          "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "was trained on events" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()
