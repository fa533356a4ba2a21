"""Jet-tagging figures in soft-drop mass windows, and the mass-sculpting check, as pure numpy.

scores (E, K) float class probabilities, labels (E,) int, msoftdrop (E,) float [GeV] (NaN where
the inputs did not record it: those jets are left out here and counted).

`mass_windows` repeats the signal-vs-rest figures of engine.training.metrics within each window
[lo, hi) of soft-drop mass: events, AUC, background rejection 1/eps_B at fixed signal efficiencies
(of the window's own signal), and the fraction of the window's signal and background that pass the
inclusive cut at eps_S = 0.5.

`mass_sculpting` is the decorrelation check of the literature (e.g. Kasieczka and Shih, DisCo,
2020): the Jensen-Shannon divergence (log base 2, so 0 <= JSD <= 1) between the msoftdrop
distributions of the background jets that pass and that fail a cut on the signal score keeping a
fraction eps_S = 0.5 of the signal, in bins of 10 GeV from 0 to 300 GeV plus one overflow bin. 0
means the cut leaves the background's mass shape untouched; a tagger that learned the mass gives a
large JSD (small 1/JSD). With no background jet on one side of the cut the JSD is undefined (NaN).
"""
from __future__ import annotations

import math

import numpy as np

from engine.training.metrics import background_rejection, roc_auc

DEFAULT_WINDOWS_GEV = (0.0, 50.0, 90.0, 140.0, math.inf)
"""Window edges: below the W/Z peak, the W/Z peak, the Higgs peak (90-140 GeV), above it."""
SCULPTING_EFFICIENCY = 0.5
SCULPTING_BINS_GEV = (0.0, 300.0, 10.0)
"""Histogram of the sculpting check: from, to, width; masses above `to` fill one overflow bin."""


def window_name(lo: float, hi: float) -> str:
    return f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}"


def parse_windows(text: str) -> tuple[float, ...]:
    """Window edges from '0,50,90,140,inf' (GeV, strictly increasing, at least two); ValueError else."""
    try:
        edges = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of masses in GeV") from None
    if len(edges) < 2 or any(math.isnan(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"{text!r}: the edges must be at least two strictly increasing masses in GeV")
    return edges


def score_threshold(signal_scores: np.ndarray, efficiency: float) -> float:
    """The score cut `score >= t` that keeps (about) `efficiency` of the signal."""
    return float(np.quantile(signal_scores, 1.0 - efficiency, method="lower"))


def mass_windows(scores: np.ndarray, labels: np.ndarray, msoftdrop: np.ndarray, signal: int,
                 edges: tuple[float, ...] = DEFAULT_WINDOWS_GEV) -> dict[str, dict]:
    """{"0-50": {...}, ...}: the signal-vs-rest figures within each msoftdrop window."""
    score, is_signal = scores[:, signal], labels == signal
    cut = score_threshold(score[is_signal], SCULPTING_EFFICIENCY) if is_signal.any() else math.inf
    out = {}
    for lo, hi in zip(edges, edges[1:]):
        inside = (msoftdrop >= lo) & (msoftdrop < hi)
        s, b = inside & is_signal, inside & ~is_signal
        out[window_name(lo, hi)] = {
            "events": int(inside.sum()), "signal_events": int(s.sum()), "background_events": int(b.sum()),
            "roc_auc": roc_auc(is_signal[inside], score[inside]),
            "background_rejection_at_signal_efficiency": background_rejection(is_signal[inside], score[inside]),
            "signal_passing_inclusive_cut": _fraction(score[s] >= cut),
            "background_passing_inclusive_cut": _fraction(score[b] >= cut),
        }
    return out


def _fraction(passing: np.ndarray) -> float:
    return float(passing.mean()) if len(passing) else float("nan")


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JSD (log base 2) of two histograms (normalised here); NaN if either is empty."""
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))
    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def sculpting_edges(bins: tuple[float, float, float] = SCULPTING_BINS_GEV) -> np.ndarray:
    """Bin edges of `bins` (from, to, width) and inf: the last bin is the overflow (masses >= to)."""
    lo, hi, width = bins
    return np.append(np.arange(lo, hi + width / 2, width), np.inf)


def mass_histogram(mass: np.ndarray, bins: tuple[float, float, float] = SCULPTING_BINS_GEV) -> np.ndarray:
    """Counts in the bins of `sculpting_edges(bins)`."""
    return np.histogram(mass, bins=sculpting_edges(bins))[0].astype(np.float64)


def mass_sculpting(scores: np.ndarray, labels: np.ndarray, msoftdrop: np.ndarray, signal: int,
                   efficiency: float = SCULPTING_EFFICIENCY) -> dict:
    """The msoftdrop JSD of the background jets passing / failing the cut keeping `efficiency`
    of the signal."""
    score, is_signal = scores[:, signal], labels == signal
    background = ~is_signal
    out = {"signal_efficiency": efficiency, "bins_gev": list(SCULPTING_BINS_GEV) + ["overflow"],
           "background_events": int(background.sum())}
    if not is_signal.any() or not background.any():
        return {**out, "score_threshold": None, "background_passing": 0, "jsd": float("nan"),
                "inverse_jsd": float("nan")}
    cut = score_threshold(score[is_signal], efficiency)
    passing = background & (score >= cut)
    failing = background & ~(score >= cut)
    jsd = jensen_shannon(mass_histogram(msoftdrop[failing]), mass_histogram(msoftdrop[passing]))
    return {**out, "score_threshold": cut, "signal_passing": _fraction(score[is_signal] >= cut),
            "background_passing": int(passing.sum()), "jsd": jsd,
            "inverse_jsd": None if jsd == 0 else (float("nan") if math.isnan(jsd) else 1.0 / jsd)}


def jet_mass_metrics(scores: np.ndarray, labels: np.ndarray, msoftdrop: np.ndarray, signal: int,
                     edges: tuple[float, ...] = DEFAULT_WINDOWS_GEV) -> dict:
    """Everything above for `evaluate`, on the jets that have a soft-drop mass."""
    known = ~np.isnan(msoftdrop)
    out = {"events_without_msoftdrop": int((~known).sum()),
           "mass_window_edges_gev": [e if math.isfinite(e) else "inf" for e in edges]}
    if not known.any():
        return out
    args = (scores[known], labels[known], msoftdrop[known], signal)
    return {**out, "mass_windows": mass_windows(*args, edges=edges), "mass_sculpting": mass_sculpting(*args)}
