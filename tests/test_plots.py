"""Evaluation plots: fractional epochs from the log, every plot written atomically as PNG."""
import numpy as np
import pytest

from engine.training import plots


def test_fractional_epochs_from_steps_and_the_end_of_epoch_rows():
    rows = [{"step": 5, "epoch": 0, "split": "train"}, {"step": 10, "epoch": 0, "split": "train"},
            {"step": 10, "epoch": 0, "split": "val"}, {"step": 15, "epoch": 1, "split": "train"},
            {"step": 20, "epoch": 1, "split": "val"}, {"step": 24, "epoch": 2, "split": "train"}]
    assert plots.fractional_epochs(rows) == pytest.approx([0.5, 1.0, 1.0, 1.5, 2.0, 3.0])


def test_every_plot_is_a_png_and_leaves_no_temporary(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    scores = rng.dirichlet(np.ones(3), 300) + np.eye(3)[labels]
    scores /= scores.sum(1, keepdims=True)
    names = ["dy", "ttbar", "wjets"]
    plots.roc(scores, labels, names, tmp_path / "roc.png", "m on test, 300 events")
    plots.confusion(np.array([[90, 5, 5], [3, 95, 2], [10, 10, 80]]), names, tmp_path / "cm.png", "t")
    plots.score_distributions(scores, labels, names, 1, tmp_path / "s.png", "t")
    rows = [{"step": s, "epoch": s // 10, "split": "train", "loss": 1 / s, "accuracy": 0.5} for s in range(1, 30)]
    plots.training_curves(rows + [{"step": 10, "epoch": 0, "split": "val", "loss": 0.2, "accuracy": 0.8}],
                          tmp_path / "t.png", "t")
    plots.mass_per_class(np.full(4, np.nan), np.zeros(4, int), np.ones(4), names, tmp_path / "m.png", "m", "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "m.png", "roc.png", "s.png", "t.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in tmp_path.iterdir())
