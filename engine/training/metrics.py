"""Classification metrics on per-event scores, as pure numpy functions.

scores (E, K) float: class probabilities; labels (E,) int in [0, K).
The 2017 study's figure of merit, `signal_vs_background_efficiency`, is the fraction of correct
signal/background decisions on a 50/50 sample: 0.5 * (signal efficiency + background rejection),
with the background made of the other classes in equal parts and the decision `argmax == signal`.
`background_rejection` is the collider convention, 1/eps_B at a fixed signal efficiency eps_S, on
the signal class's one-vs-rest ROC (its score; every other event is background).
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    return np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k).astype(np.int64)


def roc_curve(is_signal: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds, from (0, 0) to (1, 1)."""
    order = np.argsort(-score, kind="stable")
    s, y = score[order], is_signal[order].astype(np.float64)
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(1 - y)[distinct]
    return (np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)])


def roc_auc(is_signal: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half), NaN if one side is empty."""
    if is_signal.all() or not is_signal.any():
        return float("nan")
    fpr, tpr = roc_curve(is_signal, score)
    return float(np.trapezoid(tpr, fpr))


SIGNAL_EFFICIENCIES = (0.3, 0.5, 0.7)


def background_efficiency_at(is_signal: np.ndarray, score: np.ndarray, eps_s: float) -> float:
    """eps_B at signal efficiency `eps_s`: linear interpolation in eps_S between the two ROC points
    around it (where several points share an eps_S, the lowest eps_B); NaN if a side is empty."""
    if is_signal.all() or not is_signal.any():
        return float("nan")
    fpr, tpr = roc_curve(is_signal, score)
    tpr_u, first = np.unique(tpr, return_index=True)     # fpr rises with tpr: first = lowest
    return float(np.interp(eps_s, tpr_u, fpr[first]))


def background_rejection(is_signal: np.ndarray, score: np.ndarray,
                         efficiencies: tuple[float, ...] = SIGNAL_EFFICIENCIES) -> dict[str, float | None]:
    """{"0.3": 1/eps_B, ...} at each signal efficiency; None where no background event passes
    (the rejection exceeds the number of background events)."""
    out: dict[str, float | None] = {}
    for eps in efficiencies:
        eps_b = background_efficiency_at(is_signal, score, eps)
        out[f"{eps:g}"] = None if eps_b == 0 else (float("nan") if np.isnan(eps_b) else 1.0 / eps_b)
    return out


def f1_scores(cm: np.ndarray) -> np.ndarray:
    """(K,) F1 per class from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    precision = tp / np.maximum(cm.sum(axis=0), 1)
    recall = tp / np.maximum(cm.sum(axis=1), 1)
    return np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)


def signal_vs_background_efficiency(cm: np.ndarray, signal: int) -> float:
    """0.5 * (signal efficiency + mean background rejection) on a 50/50 sample."""
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    background = [c for c in range(cm.shape[0]) if c != signal and cm[c].sum() > 0]
    rejection = np.mean([1.0 - rates[c, signal] for c in background]) if background else float("nan")
    return float(0.5 * (rates[signal, signal] + rejection))


def classification_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str],
                           signal: str | None = None) -> dict:
    """Every number `evaluate` reports, as a JSON-able dict."""
    k = len(class_names)
    predicted = scores.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, k)
    per_class = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    out = {
        "events": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
        "efficiency": {name: float(per_class[i]) for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "roc_auc_one_vs_rest": {name: roc_auc(labels == i, scores[:, i]) for i, name in enumerate(class_names)},
        "f1": {name: float(v) for name, v in zip(class_names, f1_scores(cm))},
        "class_names": list(class_names),
    }
    if signal is not None:
        s = class_names.index(signal)
        out["signal"] = signal
        out["signal_vs_background_efficiency"] = signal_vs_background_efficiency(cm, s)
        out["background_rejection_at_signal_efficiency"] = background_rejection(labels == s, scores[:, s])
        out["background_events"] = int((labels != s).sum())
    return out
