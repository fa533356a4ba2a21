"""Reconstruction under pileup: charged-hadron subtraction, jet areas and rho, vertices.

Columnar over a whole batch of events, like the rest of generation (one FastJet call per
clustering for all events of the batch).

  CHS       a charged particle within the tracker has a track whose z is its vertex's z smeared
            by the track z resolution; farther than the association window from the primary
            vertex (the hard interaction's) it is assigned to a pileup vertex and removed before
            jet clustering and lepton isolation. Neutral pileup stays (only calorimeters see it).
  areas     FastJet's Python awkward interface has no jet areas, so a grid of ghosts (pt 1e-100
            GeV, one per spacing x spacing cell over the calorimeter's |eta|) is clustered with
            the particles; a jet's area is the number of ghosts it holds times the cell's area.
  rho       the median of pt / area over the kt (R = 0.4) jets of the event within |eta| < 2.5,
            ghost-only jets included (Cacciari and Salam's estimate); jets are scaled by
            max(0, 1 - rho * area / pt).
  vertices  interactions with at least 2 charged particles of pt > 0.5 GeV in the tracker,
            those closer than the merging distance in z counted as one.
"""
from __future__ import annotations

import math

import awkward as ak
import numpy as np

from engine.data.generation.detector import PileupResponseConfig

GHOST_PT_GEV = 1e-100


def chs_removed(flat: dict, counts: np.ndarray, hard_z: np.ndarray, cfg: PileupResponseConfig,
                rng: np.random.Generator) -> np.ndarray:
    """Flat (P,) bool: charged particles whose track is associated with a pileup vertex.

    `flat` holds status, charge, eta and z (each particle's true vertex z, mm); hard_z (E,) is
    the primary vertex of each event. One Gaussian draw per track.
    """
    track = (flat["status"] > 0) & (flat["charge"] != 0) & (np.abs(flat["eta"]) < cfg.tracker_abs_eta_max)
    removed = np.zeros(len(track), dtype=bool)
    primary = np.repeat(hard_z, counts)[track]
    track_z = flat["z"][track] + cfg.track_z_resolution_mm * rng.standard_normal(int(track.sum()))
    removed[track] = np.abs(track_z - primary) > cfg.association_window_mm
    return removed


def ghost_grid(abs_eta_max: float, spacing: float) -> tuple[dict, float]:
    """Ghost four-momenta (G,) px/py/pz/E at the centres of a grid over |eta| < abs_eta_max, and
    the area of one cell."""
    n_eta = max(1, int(math.ceil(2 * abs_eta_max / spacing - 1e-9)))
    n_phi = max(1, int(round(2 * math.pi / spacing)))
    d_eta, d_phi = 2 * abs_eta_max / n_eta, 2 * math.pi / n_phi
    eta, phi = np.meshgrid(-abs_eta_max + d_eta * (np.arange(n_eta) + 0.5),
                           -math.pi + d_phi * (np.arange(n_phi) + 0.5), indexing="ij")
    eta, phi = eta.ravel(), phi.ravel()
    ghosts = {"px": GHOST_PT_GEV * np.cos(phi), "py": GHOST_PT_GEV * np.sin(phi),
              "pz": GHOST_PT_GEV * np.sinh(eta), "E": GHOST_PT_GEV * np.cosh(eta)}
    return ghosts, d_eta * d_phi


def _with_ghosts(inputs: ak.Array, ghosts: dict) -> ak.Array:
    """(E, P) px/py/pz/E records with the same ghosts appended to every event."""
    n_events, n_ghosts = len(inputs), len(ghosts["px"])
    grid = ak.unflatten(ak.zip({k: np.tile(v, n_events) for k, v in ghosts.items()}),
                        np.full(n_events, n_ghosts))
    return ak.concatenate([inputs, grid], axis=1)


def cluster_with_areas(inputs: ak.Array, algorithm: str, radius: float, pt_min: float,
                       abs_eta_max: float, spacing: float) -> tuple[ak.Array, ak.Array]:
    """Jets (E, J) px/py/pz/E of `inputs` (E, P) px/py/pz/E records, and their areas (E, J)."""
    import fastjet

    ghosts, cell = ghost_grid(abs_eta_max, spacing)
    definition = fastjet.JetDefinition(getattr(fastjet, f"{algorithm}_algorithm"), radius)
    sequence = fastjet.ClusterSequence(_with_ghosts(inputs, ghosts), definition)
    jets = sequence.inclusive_jets(pt_min)
    index = sequence.constituent_index(pt_min)
    n_real = ak.num(inputs, axis=1)
    area = ak.sum(index >= n_real, axis=2) * cell
    return jets, area


def rho(inputs: ak.Array, cfg: PileupResponseConfig) -> np.ndarray:
    """Median pt / area of the kt jets within |eta| < cfg.rho_abs_eta_max, per event: (E,) GeV.

    Only particles (and ghosts) within rho_abs_eta_max + rho_radius are clustered: the jets
    beyond are not used.
    """
    reach = cfg.rho_abs_eta_max + cfg.rho_radius
    pt = np.hypot(inputs.px, inputs.py)
    eta = np.arcsinh(inputs.pz / np.maximum(pt, 1e-300))
    jets, area = cluster_with_areas(inputs[abs(eta) < reach], "kt", cfg.rho_radius, 0.0, reach,
                                    cfg.ghost_spacing)
    jet_pt = np.hypot(jets.px, jets.py)
    jet_eta = np.arcsinh(jets.pz / np.maximum(jet_pt, 1e-300))
    used = (abs(jet_eta) < cfg.rho_abs_eta_max) & (area > 0)
    density = (jet_pt / ak.where(used, area, 1.0))[used]
    return jagged_median(density)


def jagged_median(values: ak.Array) -> np.ndarray:
    """Median of each row of a jagged (E, N) array; 0 for an empty row. (E,) float64."""
    counts = ak.to_numpy(ak.num(values, axis=1))
    flat = ak.to_numpy(ak.flatten(ak.sort(values, axis=1))).astype(np.float64)
    starts = np.cumsum(counts) - counts
    safe = np.maximum(counts, 1)
    low = flat[np.minimum(starts + (safe - 1) // 2, max(len(flat) - 1, 0))] if len(flat) else 0.0
    high = flat[np.minimum(starts + safe // 2, max(len(flat) - 1, 0))] if len(flat) else 0.0
    return np.where(counts > 0, 0.5 * (low + high), 0.0)


def subtract(jets: ak.Array, area: ak.Array, event_rho: np.ndarray) -> ak.Array:
    """Jets (E, J) px/py/pz/E scaled by max(0, 1 - rho * area / pt)."""
    pt = np.hypot(jets.px, jets.py)
    scale = np.maximum(0.0, 1.0 - event_rho * area / np.maximum(pt, 1e-300))
    return ak.zip({c: jets[c] * scale for c in ("px", "py", "pz", "E")})


def count_vertices(flat: dict, counts: np.ndarray, cfg: PileupResponseConfig) -> np.ndarray:
    """Reconstructed vertices per event (E,) int32.

    `flat` holds status, charge, pt, eta, vertex (0 hard, k pileup) and z. An interaction with at
    least vertex_min_tracks tracks above vertex_track_pt_min_gev is seen; seen interactions of an
    event are sorted by z, and one closer than vertex_merge_mm to the previous joins its vertex.
    """
    event = np.repeat(np.arange(len(counts)), counts)
    track = ((flat["status"] > 0) & (flat["charge"] != 0) & (np.abs(flat["eta"]) < cfg.tracker_abs_eta_max)
             & (flat["pt"] > cfg.vertex_track_pt_min_gev))
    n_vertex = int(flat["vertex"].max()) + 1 if len(event) else 1
    key = event[track] * n_vertex + flat["vertex"][track]
    keys, first, tracks = np.unique(key, return_index=True, return_counts=True)
    seen = tracks >= cfg.vertex_min_tracks
    owner, z = keys[seen] // n_vertex, flat["z"][track][first[seen]]
    order = np.lexsort((z, owner))
    owner, z = owner[order], z[order]
    new = np.ones(len(owner), dtype=bool)
    new[1:] = (owner[1:] != owner[:-1]) | (np.diff(z) >= cfg.vertex_merge_mm)
    return np.bincount(owner[new], minlength=len(counts)).astype(np.int32)
