"""Jet substructure from padded constituents, vectorised over jets (no Python loop per jet).

Inputs are the padded fat-jet arrays of `engine.data.objects.pad_fatjets` (numpy):
  constituents (B, M, 5) float [pt GeV, eta, phi rad, charge, pid], real ones first
  counts       (B,) int, the real constituents of each jet (slots at or beyond it are padding)
  fatjet       (B, 4) float [pt GeV, eta, phi rad, mass GeV]

Padded slots are replaced by zeros before any arithmetic, so whatever they hold (even NaN) changes
nothing; every feature is invariant under permutations of the real constituents and sees phi only
through wrapped differences. Constituents are massless (rapidity = eta, E = pt cosh eta).

  N-subjettiness (Thaler and Van Tilburg 2011), beta = 1, R0 = 0.8:
      tau_N = sum_k pt_k min_a dR(k, a) / sum_k pt_k R0, over the axes a of the N exclusive-kt
      subjets of the jet's constituents (FastJet kt with R = 1000, so no constituent is lost
      to the beam, as fjcontrib's exclusive-kt axes); tau_N = 0 for a jet of at most N
      constituents (each can be its own axis).
  Energy correlation D2 (Larkoski, Moult and Neill 2014), beta = 1: with z_i = pt_i / sum pt,
      e2 = sum_{i<j} z_i z_j dR_ij, e3 = sum_{i<j<k} z_i z_j z_k dR_ij dR_ik dR_jk, D2 = e3 / e2^3.
  Ratios with a zero denominator (one constituent, or all at one point) are 0.
"""
from __future__ import annotations

import warnings

import numpy as np

from engine.data.generation.detector import wrap_phi

R0 = 0.8
"""The jet radius: the N-subjettiness normalisation."""
AXES_R = 1000.0
"""The radius of the exclusive-kt reclustering that finds the axes (every constituent in some axis)."""
LEADING = 4
"""Leading constituents whose pt fractions are features."""
JET_FEATURES = ("pt", "eta", "mass", "n_constituents", "tau21", "tau32", "d2",
                *(f"pt_fraction_{i + 1}" for i in range(LEADING)))
"""The columns of `jet_features`, in order."""
CHUNK_JETS = 256
"""Jets per chunk of the pairwise and triplet sums, bounding their memory (a few tens of MB)."""


def real_constituents(constituents: np.ndarray, counts: np.ndarray):
    """pt, eta, phi as (B, M) float64 with zeros in padded slots, and the (B, M) bool mask."""
    mask = np.arange(constituents.shape[1]) < np.asarray(counts).reshape(-1, 1)
    values = np.where(mask[..., None], np.asarray(constituents[..., :3], np.float64), 0.0)
    return values[..., 0], values[..., 1], values[..., 2], mask


def exclusive_kt_axes(pt, eta, phi, mask, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rapidity and phi (B, n) of the n exclusive-kt subjets (R = AXES_R) of each jet's constituents;
    NaN for a jet with n constituents or fewer (it needs no axes: its tau_n is 0). One FastJet
    call for all jets that have more."""
    import awkward as ak
    import fastjet
    from engine.data.generation.processes import stdout_silenced

    counts = mask.sum(1)
    rap, azimuth = np.full((len(pt), n), np.nan), np.full((len(pt), n), np.nan)
    many = counts > n
    if not many.any():
        return rap, azimuth
    keep = mask & many[:, None]
    p, e, f = pt[keep], eta[keep], phi[keep]
    particles = ak.unflatten(ak.zip({"px": p * np.cos(f), "py": p * np.sin(f), "pz": p * np.sinh(e),
                                     "E": p * np.cosh(e)}), counts[many])
    with stdout_silenced(), warnings.catch_warnings():     # FastJet's banner; its spurious kt warning
        warnings.filterwarnings("ignore", message="dcut and exclusive jets")
        sequence = fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.kt_algorithm, AXES_R))
        subjets = sequence.exclusive_jets(n)
    px, py, pz, energy = (ak.to_numpy(ak.flatten(subjets[c])).reshape(-1, n) for c in ("px", "py", "pz", "E"))
    rap[many] = 0.5 * np.log((energy + pz) / (energy - pz))
    azimuth[many] = np.arctan2(py, px)
    return rap, azimuth


def n_subjettiness(pt, eta, phi, mask, n: int) -> np.ndarray:
    """(B,) tau_n (beta = 1, R0 = 0.8, exclusive-kt axes); 0 for jets of at most n constituents."""
    rap, azimuth = exclusive_kt_axes(pt, eta, phi, mask, n)
    deta = eta[:, :, None] - rap[:, None, :]
    dphi = wrap_phi(phi[:, :, None] - azimuth[:, None, :])
    nearest = np.sqrt(deta ** 2 + dphi ** 2).min(axis=2)          # (B, M), NaN for jets without axes
    tau = (pt * np.where(mask, nearest, 0.0)).sum(1) / (R0 * pt.sum(1)).clip(min=1e-300)
    return np.where(mask.sum(1) > n, tau, 0.0)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def energy_correlations(pt, eta, phi, mask) -> tuple[np.ndarray, np.ndarray]:
    """(B,) e2 and e3 (beta = 1), in chunks of CHUNK_JETS jets of similar counts (jets taken in
    order of their count), each chunk cut to its largest count: the triplet sum costs M^3 per jet.

    e3 = trace(W^3) / 6 with W_ij = dR_ij sqrt(z_i z_j): dR_ii = 0 removes every triplet with a
    repeated index, and each unordered triplet appears 6 times in the trace."""
    e2, e3 = np.zeros(len(pt)), np.zeros(len(pt))
    counts = mask.sum(1)
    total = pt.sum(1)
    z = pt / np.where(total > 0, total, 1.0)[:, None]
    order = np.argsort(counts, kind="stable")
    for start in range(0, len(pt), CHUNK_JETS):
        rows = order[start:start + CHUNK_JETS]
        m = int(counts[rows].max(initial=0))
        if m < 2:
            continue
        zc, ec, fc = z[rows, :m], eta[rows, :m], phi[rows, :m]
        dr = np.sqrt((ec[:, :, None] - ec[:, None, :]) ** 2 + wrap_phi(fc[:, :, None] - fc[:, None, :]) ** 2)
        e2[rows] = 0.5 * (zc[:, :, None] * dr * zc[:, None, :]).sum((1, 2))
        root = np.sqrt(zc)
        w = dr * root[:, :, None] * root[:, None, :]
        e3[rows] = np.einsum("bij,bij->b", w @ w, w) / 6.0
    return e2, e3


def leading_fractions(pt: np.ndarray, jet_pt: np.ndarray, k: int = LEADING) -> np.ndarray:
    """(B, k) pt of the k hardest constituents over the jet's pt (0 where a jet has fewer)."""
    hardest = -np.sort(-pt, axis=1)[:, :k]
    hardest = np.pad(hardest, ((0, 0), (0, k - hardest.shape[1])))
    return ratio(hardest, np.broadcast_to(jet_pt[:, None], hardest.shape))


def jet_features(constituents: np.ndarray, counts: np.ndarray, fatjet: np.ndarray) -> np.ndarray:
    """(B, len(JET_FEATURES)) float32: jet pt, eta, mass, number of constituents, tau21, tau32, D2
    and the pt fractions of the LEADING hardest constituents (columns named by JET_FEATURES)."""
    pt, eta, phi, mask = real_constituents(constituents, counts)
    jet = np.asarray(fatjet, np.float64)
    taus = [n_subjettiness(pt, eta, phi, mask, n) for n in (1, 2, 3)]
    e2, e3 = energy_correlations(pt, eta, phi, mask)
    columns = [jet[:, 0], jet[:, 1], jet[:, 3], mask.sum(1).astype(np.float64),
               ratio(taus[1], taus[0]), ratio(taus[2], taus[1]), ratio(e3, e2 ** 3)]
    return np.column_stack([*columns, leading_fractions(pt, jet[:, 0])]).astype(np.float32)
