"""Evaluation plots as PNG files (matplotlib, Agg backend), in the field's conventions: confusion
matrix (counts, row-normalised colours), ROC as background rejection against signal efficiency,
score distributions, training curves against epoch, and a mass spectrum per predicted class.

Every plot takes a `title` (model, split, number of events) and is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.files import atomic_path  # noqa: E402
from engine.training.metrics import roc_auc, roc_curve  # noqa: E402


def _save(fig, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def confusion(cm: np.ndarray, names: list[str], path: Path, title: str) -> Path:
    """Event counts per (true, predicted) class; colour and the number in brackets are the
    fraction of each true class (rows sum to 1)."""
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(4.2 + 0.5 * k, 3.6 + 0.4 * k))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(rates):
        ax.text(j, i, f"{cm[i, j]:,}\n({v:.3f})", ha="center", va="center", fontsize=9,
                color="white" if v > 0.5 else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names,
           xlabel="predicted class", ylabel="true class",
           title="confusion matrix: events (fraction of the true class)")
    ax.title.set_fontsize(9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class (row-normalised)")
    return _save(fig, path, title)


def roc(scores: np.ndarray, labels: np.ndarray, names: list[str], path: Path, title: str) -> Path:
    """One-vs-rest ROC per class: background rejection 1/eps_B (log) against signal efficiency
    eps_S, beside the linear eps_S against eps_B; AUC in the legends."""
    fig, (log_ax, lin_ax) = plt.subplots(1, 2, figsize=(10, 4.3))
    for i, name in enumerate(names):
        if not ((labels == i).any() and (labels != i).any()):
            continue
        fpr, tpr = roc_curve(labels == i, scores[:, i])
        label = f"{name} vs rest (AUC {roc_auc(labels == i, scores[:, i]):.4f})"
        keep = fpr > 0                                     # 1/eps_B is infinite where eps_B = 0
        (line,) = log_ax.plot(tpr[keep], 1.0 / fpr[keep], label=label)
        lin_ax.plot(fpr, tpr, color=line.get_color(), label=label)
    log_ax.plot([0, 1], [1, 1], ls=":", color="grey", label="random")
    log_ax.set(xlabel="signal efficiency $\\varepsilon_S$", ylabel="background rejection $1/\\varepsilon_B$",
               yscale="log", xlim=(0, 1), title="background rejection (one vs rest)")
    lin_ax.plot([0, 1], [0, 1], ls=":", color="grey", label="random")
    lin_ax.set(xlabel="background efficiency $\\varepsilon_B$", ylabel="signal efficiency $\\varepsilon_S$",
               xlim=(0, 1), ylim=(0, 1.01), title="ROC (one vs rest)")
    for ax in (log_ax, lin_ax):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save(fig, path, title)


def score_distributions(scores: np.ndarray, labels: np.ndarray, names: list[str], signal: int,
                        path: Path, title: str) -> Path:
    """Distribution of the signal-class score for each true class (each normalised to unit area)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    bins = np.linspace(0, 1, 41)
    for i, name in enumerate(names):
        if (labels == i).any():
            ax.hist(scores[labels == i, signal], bins=bins, histtype="step", density=True,
                    label=f"true {name}")
    ax.set(xlabel=f"score({names[signal]})", ylabel="density (unit area per class)", yscale="log",
           title=f"{names[signal]} score by true class")
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def fractional_epochs(rows: list[dict]) -> list[float]:
    """Epoch of each log row as a float: epoch e spans [e, e + 1); a row at step s of epoch e sits
    at e + (s - first step of e) / (steps in e). Epoch boundaries are the validation rows' steps
    (written at the end of each epoch), else the last logged step of each epoch."""
    val_end: dict[int, float] = {}
    last: dict[int, float] = {}
    for r in rows:
        e = int(r["epoch"])
        last[e] = max(last.get(e, 0.0), r["step"])
        if r.get("split") == "val":
            val_end[e] = r["step"]
    ends = {**last, **val_end}
    out = []
    for r in rows:
        e = int(r["epoch"])
        start = max((s for k, s in ends.items() if k < e), default=0.0)
        span = ends[e] - start
        out.append(e + ((r["step"] - start) / span if span > 0 else 1.0))
    return out


def training_curves(rows: list[dict], path: Path, title: str) -> Path:
    """Loss and accuracy against epoch, train (per logged window) and validation (end of epoch)."""
    rows = [r for r in rows if "step" in r and "epoch" in r]
    epochs = fractional_epochs(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style, colour, label in (("train", "-", "C0", "train (logged window)"),
                                        ("val", "o-", "C1", "validation (end of epoch)")):
        for ax, key in ((left, "loss"), (right, "accuracy")):
            pts = [(x, r[key]) for x, r in zip(epochs, rows) if r.get("split") == split and key in r]
            if pts:
                ax.plot(*zip(*pts), style, color=colour, label=label, ms=4)
    left.set(xlabel="epoch", ylabel="loss (cross-entropy)", title="loss")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (left, right):
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path, title)


def mass_per_class(mass: np.ndarray, predicted: np.ndarray, weights: np.ndarray, names: list[str],
                   path: Path, label: str, title: str) -> Path:
    """Weighted mass spectrum of the events predicted as each class (NaN masses left out)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = np.isfinite(mass)
    top = max(200.0, float(np.quantile(mass[ok], 0.99))) if ok.any() else 200.0
    bins = np.linspace(0, top, 51)
    for i, name in enumerate(names):
        sel = ok & (predicted == i)
        if sel.any():
            ax.hist(mass[sel], bins=bins, weights=weights[sel], histtype="step", label=f"predicted {name}")
    if not ok.any():
        ax.text(0.5, 0.5, "no event has this variable", transform=ax.transAxes, ha="center")
    ax.set(xlabel=label, ylabel="events (cross-section weighted) / bin", title="pseudo-data by predicted class")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path, title)


def mass_sculpting(msoftdrop: np.ndarray, is_signal: np.ndarray, passing: np.ndarray, edges: np.ndarray,
                   efficiency: float, jsd: float, path: Path, title: str) -> Path:
    """Soft-drop mass of the background before and after the cut keeping `efficiency` of the signal
    (`passing`), and of the signal, each normalised to unit area; `edges` the bins (the last one open)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    shown = np.minimum(msoftdrop, edges[-2] + 0.5 * (edges[-2] - edges[-3]))    # overflow in the last bin
    bins = np.append(edges[:-1], edges[-2] + (edges[-2] - edges[-3]))
    for sel, label, style in ((~is_signal, "background, all", "-"),
                              (~is_signal & passing, f"background passing the cut (JSD {jsd:.4f})", "-"),
                              (is_signal, "signal, all", "--")):
        if sel.any():
            ax.hist(shown[sel], bins=bins, density=True, histtype="step", linestyle=style, label=label)
    ax.set(xlabel="soft-drop mass [GeV] (last bin: overflow)", ylabel="fraction / GeV",
           title=f"mass sculpting at the cut keeping {efficiency:.0%} of the signal")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path, title)
