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
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    pairwise = wins / (len(pos) * len(neg))
    assert metrics.roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
    assert np.isnan(metrics.roc_auc(np.ones(3, bool), np.ones(3)))


def test_f1():
    cm = np.array([[3, 1], [2, 4]])
    p0, r0 = 3 / 5, 3 / 4
    assert metrics.f1_scores(cm)[0] == pytest.approx(2 * p0 * r0 / (p0 + r0))


def test_background_rejection_interpolates_the_roc():
    # signal scores 0.9, 0.8, 0.7, 0.6; background 0.85, 0.65, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.85, 0.65, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.r_[np.ones(4, bool), np.zeros(8, bool)]
    # ROC points (eps_B, eps_S): (0,0) (0,.25) (.125,.25) (.125,.5) (.125,.75) (.25,.75) (.25,1) ...
    assert metrics.background_efficiency_at(y, score, 0.5) == pytest.approx(0.125)
    assert metrics.background_efficiency_at(y, score, 0.75) == pytest.approx(0.125)   # lowest eps_B at eps_S
    # between (.125, .75) and (.25, 1), the lowest eps_B of each eps_S: halfway
    assert metrics.background_efficiency_at(y, score, 0.875) == pytest.approx(0.1875)
    assert metrics.background_efficiency_at(y, score, 0.125) == pytest.approx(0.0)
    rej = metrics.background_rejection(y, score, (0.125, 0.5, 0.9))
    assert rej == {"0.125": None, "0.5": pytest.approx(8.0), "0.9": pytest.approx(1 / 0.2)}
    assert np.isnan(metrics.background_rejection(np.ones(3, bool), np.ones(3))["0.3"])


def test_background_rejection_in_the_metrics():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 3000)
    scores = rng.dirichlet(np.ones(3), 3000) + np.eye(3)[labels] * 0.2
    scores /= scores.sum(1, keepdims=True)
    out = metrics.classification_metrics(scores, labels, ["a", "b", "c"], signal="b")
    rej = out["background_rejection_at_signal_efficiency"]
    assert list(rej) == ["0.3", "0.5", "0.7"] and rej["0.3"] > rej["0.5"] > rej["0.7"] > 1
    assert out["background_events"] == int((labels != 1).sum())
    eps_b = metrics.background_efficiency_at(labels == 1, scores[:, 1], 0.5)
    passed = (scores[labels != 1, 1] >= np.quantile(scores[labels == 1, 1], 0.5)).mean()
    assert eps_b == pytest.approx(passed, abs=2e-3)
