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
            Anti-kt jets get only the ghosts near them (`antikt_with_areas`); the kt jets of rho
            get the whole grid, coarser, within the |eta| where rho is measured.
  rho       the median of pt / area over the kt (R = 0.4) jets of the event within |eta| < 2.5,
            ghost-only jets included (Cacciari and Salam's estimate); jets are scaled by
            max(0, 1 - rho * area / pt).
  vertices  interactions with at least 2 charged particles of pt > 0.5 GeV in the tracker,
            those closer than the merging distance in z counted as one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import awkward as ak
import numpy as np

from engine.data.generation.detector import PileupResponseConfig, kinematics

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


@dataclass(frozen=True)
class GhostGrid:
    """Ghosts at the centres of an (n_eta, n_phi) grid over |eta| < abs_eta_max; cell (i, k) is
    ghost i * n_phi + k."""

    abs_eta_max: float
    n_eta: int
    n_phi: int

    @classmethod
    def make(cls, abs_eta_max: float, spacing: float) -> "GhostGrid":
        return cls(abs_eta_max, max(1, int(math.ceil(2 * abs_eta_max / spacing - 1e-9))),
                   max(1, int(round(2 * math.pi / spacing))))

    @property
    def d_eta(self) -> float:
        return 2 * self.abs_eta_max / self.n_eta

    @property
    def d_phi(self) -> float:
        return 2 * math.pi / self.n_phi

    @property
    def cell_area(self) -> float:
        return self.d_eta * self.d_phi

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """eta, phi (G,) of every ghost."""
        eta, phi = np.meshgrid(-self.abs_eta_max + self.d_eta * (np.arange(self.n_eta) + 0.5),
                               -math.pi + self.d_phi * (np.arange(self.n_phi) + 0.5), indexing="ij")
        return eta.ravel(), phi.ravel()

    def near(self, eta: np.ndarray, phi: np.ndarray, owner: np.ndarray, reach: float) -> np.ndarray:
        """Keys owner * G + ghost (sorted, unique) of the ghosts within `reach` of each point."""
        m_eta, m_phi = int(math.ceil(reach / self.d_eta)) + 1, int(math.ceil(reach / self.d_phi)) + 1
        di, dk = (a.ravel() for a in np.meshgrid(np.arange(-m_eta, m_eta + 1), np.arange(-m_phi, m_phi + 1),
                                                 indexing="ij"))
        i0 = np.floor((eta + self.abs_eta_max) / self.d_eta).astype(np.int64)
        k0 = np.floor((phi + math.pi) / self.d_phi).astype(np.int64)
        i, k = i0[:, None] + di, (k0[:, None] + dk) % self.n_phi
        g_eta = -self.abs_eta_max + self.d_eta * (i + 0.5)
        g_phi = -math.pi + self.d_phi * (k + 0.5)
        dphi = (g_phi - phi[:, None] + math.pi) % (2 * math.pi) - math.pi
        inside = (i >= 0) & (i < self.n_eta) & (np.hypot(g_eta - eta[:, None], dphi) < reach)
        keys = (owner[:, None] * (self.n_eta * self.n_phi) + i * self.n_phi + k)[inside]
        return np.unique(keys)


def _ghost_vectors(eta: np.ndarray, phi: np.ndarray) -> dict:
    return {"px": GHOST_PT_GEV * np.cos(phi), "py": GHOST_PT_GEV * np.sin(phi),
            "pz": GHOST_PT_GEV * np.sinh(eta), "E": GHOST_PT_GEV * np.cosh(eta)}


def _cluster_counting_ghosts(inputs: ak.Array, ghosts: ak.Array, definition, pt_min: float,
                             cell_area: float) -> tuple[ak.Array, ak.Array]:
    """Jets of inputs + ghosts (both (E, .) px/py/pz/E records) and their areas (E, J)."""
    import fastjet

    sequence = fastjet.ClusterSequence(ak.concatenate([inputs, ghosts], axis=1), definition)
    jets = sequence.inclusive_jets(pt_min)
    index = sequence.constituent_index(pt_min)
    area = ak.sum(index >= ak.num(inputs, axis=1), axis=2) * cell_area
    return jets, area


def antikt_with_areas(inputs: ak.Array, radius: float, pt_min: float, abs_eta_max: float,
                      spacing: float) -> tuple[ak.Array, ak.Array]:
    """Anti-kt jets (E, J) px/py/pz/E above pt_min of `inputs` (E, P) px/py/pz/E, and their areas.

    The particles are clustered once without ghosts to find the jets, then again with the
    ghosts of the grid that lie within 1.5 R of those jets: a jet's ghosts lie within about R of
    its axis, and ghosts, infinitely soft, change no jet, so the others are not needed.
    """
    import fastjet

    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    found = fastjet.ClusterSequence(inputs, definition).inclusive_jets(pt_min)
    pt, eta, phi, _ = kinematics(*(ak.to_numpy(ak.flatten(found[c])) for c in ("px", "py", "pz", "E")))
    grid = GhostGrid.make(abs_eta_max, spacing)
    owner = np.repeat(np.arange(len(found)), ak.to_numpy(ak.num(found, axis=1)))
    keys = grid.near(eta, phi, owner, 1.5 * radius)
    g_eta, g_phi = (c[keys % (grid.n_eta * grid.n_phi)] for c in grid.centres())
    per_event = np.bincount(keys // (grid.n_eta * grid.n_phi), minlength=len(found))
    ghosts = ak.unflatten(ak.zip(_ghost_vectors(g_eta, g_phi)), per_event)
    return _cluster_counting_ghosts(inputs, ghosts, definition, pt_min, grid.cell_area)


def rho(inputs: ak.Array, cfg: PileupResponseConfig) -> np.ndarray:
    """Median pt / area of the kt jets within |eta| < cfg.rho_abs_eta_max, per event: (E,) GeV.

    Only particles (and ghosts) within rho_abs_eta_max + rho_radius are clustered: the jets
    beyond are not used.
    """
    reach = cfg.rho_abs_eta_max + cfg.rho_radius
    pt = np.hypot(inputs.px, inputs.py)
    eta = np.arcsinh(inputs.pz / np.maximum(pt, 1e-300))
    import fastjet

    grid = GhostGrid.make(reach, cfg.rho_ghost_spacing)
    g_eta, g_phi = grid.centres()
    n_events = len(inputs)
    ghosts = ak.unflatten(ak.zip(_ghost_vectors(np.tile(g_eta, n_events), np.tile(g_phi, n_events))),
                          np.full(n_events, len(g_eta)))
    definition = fastjet.JetDefinition(fastjet.kt_algorithm, cfg.rho_radius)
    jets, area = _cluster_counting_ghosts(inputs[abs(eta) < reach], ghosts, definition, 0.0,
                                          grid.cell_area)
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
