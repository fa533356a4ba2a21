import numpy as np
import pytest

from engine.training import metrics


def test_confusion_and_accuracy():
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    out = metrics.classification_metrics(scores, labels, ["a", "b", "c"], signal="a")
    assert out["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["efficiency"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    # signal eff 0.5; background rejection: b never called a (1.0), c called a half the time (0.5)
    assert out["signal_vs_background_efficiency"] == pytest.approx(0.5 * (0.5 + 0.75))


def test_2017_confusion_gives_the_papers_figure():
    # rows ttbar, W+jets, DY as in the 2017 study: 94% of ttbar kept, 5% / 4% mistagged
    cm = np.array([[940, 40, 20], [50, 900, 50], [40, 60, 900]])
    assert metrics.signal_vs_background_efficiency(cm, 0) == pytest.approx(0.5 * (0.94 + 0.955))


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(bool)
    s = rng.normal(size=400) + y * 1.0
    s[:50] = np.round(s[:50])  # ties
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert metrics.roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
    assert np.isnan(metrics.roc_auc(np.ones(3, bool), np.ones(3)))


def test_f1():
    cm = np.array([[3, 1], [2, 4]])
    p0, r0 = 3 / 5, 3 / 4
    assert metrics.f1_scores(cm)[0] == pytest.approx(2 * p0 * r0 / (p0 + r0))
