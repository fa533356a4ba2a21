"""Evaluation plots as PNG files (matplotlib, Agg backend): confusion matrix, ROC curves, score
distributions, training curves, and a mass spectrum per predicted class."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.training.metrics import roc_curve  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion(cm: np.ndarray, names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true class per row)."""
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4 + 0.4 * len(names), 3.6 + 0.4 * len(names)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(rates):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title="normalised confusion matrix")
    return _save(fig, path)


def roc(scores: np.ndarray, labels: np.ndarray, names: list[str], path: Path) -> Path:
    """One-vs-rest ROC curve per class."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for i, name in enumerate(names):
        if (labels == i).any() and (labels != i).any():
            fpr, tpr = roc_curve(labels == i, scores[:, i])
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest")
    ax.legend()
    return _save(fig, path)


def score_distributions(scores: np.ndarray, labels: np.ndarray, names: list[str], signal: int,
                        path: Path) -> Path:
    """Distribution of the signal-class score for each true class."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = np.linspace(0, 1, 41)
    for i, name in enumerate(names):
        ax.hist(scores[labels == i, signal], bins=bins, histtype="step", density=True, label=name)
    ax.set(xlabel=f"score({names[signal]})", ylabel="density", yscale="log", title="score distributions")
    ax.legend()
    return _save(fig, path)


def training_curves(rows: list[dict], path: Path) -> Path:
    """Loss (train and validation) and validation accuracy against optimizer steps."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for split, style in (("train", "-"), ("val", "o-")):
        pts = [(r["step"], r["loss"]) for r in rows if r.get("split") == split and "loss" in r]
        if pts:
            left.plot(*zip(*pts), style, label=split)
    acc = [(r["step"], r["accuracy"]) for r in rows if r.get("split") == "val" and "accuracy" in r]
    if acc:
        right.plot(*zip(*acc), "o-")
    left.set(xlabel="step", ylabel="loss", title="loss")
    left.legend()
    right.set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    return _save(fig, path)


def mass_per_class(mass: np.ndarray, predicted: np.ndarray, weights: np.ndarray, names: list[str],
                   path: Path, label: str = "dimuon mass [GeV]") -> Path:
    """Weighted mass spectrum of the events predicted as each class (NaN masses left out)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 200, 51)
    ok = np.isfinite(mass)
    for i, name in enumerate(names):
        sel = ok & (predicted == i)
        ax.hist(mass[sel], bins=bins, weights=weights[sel], histtype="step", label=f"predicted {name}")
    if not ok.any():
        ax.text(0.5, 0.5, "no event with two muons", transform=ax.transAxes, ha="center")
    ax.set(xlabel=label, ylabel="events (cross-section weighted)", title="pseudo-data by predicted class")
    ax.legend()
    return _save(fig, path)
