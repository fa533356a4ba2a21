"""A simple, documented detector response for generator-level particles.

Pure functions on numpy / awkward arrays (no Pythia, no FastJet): every random draw comes from
the `numpy.random.Generator` passed in, so the response is reproducible. Defaults describe a
CMS-like detector of the 2011 run; `configs/detector/default.yaml` documents the same numbers
and `python -m engine generate --detector FILE.yaml` changes them.

  leptons  e / mu final-state particles with pt > 10 GeV, |eta| < 2.5; relative isolation
           (scalar pt sum of other visible particles within dR < 0.3, divided by the lepton pt)
           below 0.10; reconstruction efficiency 0.90 (e) / 0.95 (mu); Gaussian pt resolution
           2 % (e) / 1.5 % (mu).
  jets     anti-kt R=0.4 on visible particles (|eta| < 5) minus the reconstructed leptons;
           energy smeared with sigma/E = 100 %/sqrt(pt) (+) 5 %; kept above 20 GeV.
  b-tag    a jet is b if a weakly decaying B hadron lies within dR < 0.4, else c for a charm
           hadron, else light; tagged (discriminant > 0.679) with probability 0.70 / 0.20 / 0.015.
  MET      minus the vector sum of visible particles' pt (|eta| < 5), each component smeared
           by 0.5 * sqrt(sum ET) GeV.
  pileup   (only with overlaid pileup) charged-hadron subtraction before jets and isolation,
           rho * area jet correction, reconstructed vertices: `PileupResponseConfig`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from engine.config import check_fraction, check_non_negative, check_positive

NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class LeptonConfig:
    """Electron and muon reconstruction."""

    pt_min_gev: float = 10.0
    """Reconstruction threshold (the selection cuts harder)."""
    abs_eta_max: float = 2.5
    """Tracker acceptance."""
    isolation_cone: float = 0.3
    """dR of the isolation cone."""
    isolation_max: float = 0.10
    """Maximum relative isolation (sum pt in cone / lepton pt), as the 2017 study's tight iso."""
    electron_efficiency: float = 0.90
    muon_efficiency: float = 0.95
    electron_pt_resolution: float = 0.02
    """Relative Gaussian pt resolution sigma(pt)/pt."""
    muon_pt_resolution: float = 0.015

    def __post_init__(self):
        check_fraction(self, "electron_efficiency", "muon_efficiency")
        check_positive(self, "isolation_cone", "isolation_max", "abs_eta_max")
        check_non_negative(self, "pt_min_gev", "electron_pt_resolution", "muon_pt_resolution")


@dataclass(frozen=True)
class JetConfig:
    """Anti-kt jets on visible particles and their energy response."""

    radius: float = 0.4
    pt_min_gev: float = 20.0
    """Jets are kept above this pt after smearing (clustered from half of it)."""
    abs_eta_max: float = 5.0
    """Calorimeter acceptance: particles used for jets and MET."""
    stochastic: float = 1.0
    """sigma(pt)/pt = stochastic / sqrt(pt/GeV) (+) constant."""
    constant: float = 0.05

    def __post_init__(self):
        check_positive(self, "radius", "abs_eta_max")
        check_non_negative(self, "pt_min_gev", "stochastic", "constant")


@dataclass(frozen=True)
class BTagConfig:
    """b-tagging by matching jets to weakly decaying heavy-flavour hadrons."""

    match_dr: float = 0.4
    working_point: float = 0.679
    """`btag > working_point` marks a b-tagged jet (CSV medium in the 2017 study)."""
    b_efficiency: float = 0.70
    c_mistag: float = 0.20
    light_mistag: float = 0.015
    shape: float = 2.0
    """Toy discriminant shape: tagged jets pile up towards 1, untagged ones towards 0."""

    def __post_init__(self):
        check_fraction(self, "working_point", "b_efficiency", "c_mistag", "light_mistag")
        check_positive(self, "match_dr", "shape")


@dataclass(frozen=True)
class MetConfig:
    """Missing transverse momentum from the visible particles."""

    resolution: float = 0.5
    """Each MET component is smeared by resolution * sqrt(sum ET / GeV) GeV."""

    def __post_init__(self):
        check_non_negative(self, "resolution")


@dataclass(frozen=True)
class FatJetConfig:
    """Large-radius jets for jet images (particle level: constituents are not smeared)."""

    radius: float = 0.8
    pt_min_gev: float = 200.0
    """Reconstruction threshold (the selection cuts at 300 GeV)."""
    match_dr: float = 0.8
    """hbb jets: the Higgs and both b quarks within this dR of the jet axis."""

    def __post_init__(self):
        check_positive(self, "radius", "match_dr")
        check_non_negative(self, "pt_min_gev")


@dataclass(frozen=True)
class PileupResponseConfig:
    """How reconstruction treats overlaid pileup (engine.data.generation.subtraction); used only
    when pileup is overlaid, so it is no part of a job's settings without pileup."""

    chs: bool = True
    """Charged-hadron subtraction: charged particles in the tracker whose track z is outside the
    association window around the primary vertex are removed before jets and isolation."""
    tracker_abs_eta_max: float = 2.5
    track_z_resolution_mm: float = 0.1
    """Gaussian resolution of a track's z at the beam line (CMS, pT of a few GeV, barrel)."""
    association_window_mm: float = 1.0
    """A track farther than this from the primary vertex in z belongs to a pileup vertex."""
    rho_correction: bool = True
    """Scale each jet by max(0, 1 - rho * area / pt) before smearing and thresholds."""
    ghost_spacing: float = 0.1
    """Ghost grid step in eta and phi for the jets' areas (a ghost holds spacing^2 of area)."""
    rho_radius: float = 0.4
    """kt jets whose median pt / area is rho."""
    rho_ghost_spacing: float = 0.25
    """Ghost grid step for the kt jets' areas (the whole grid is clustered: coarser)."""
    rho_abs_eta_max: float = 2.5
    """rho from the kt jets within this |eta|."""
    vertex_track_pt_min_gev: float = 0.5
    vertex_min_tracks: int = 2
    """An interaction is a reconstructed vertex with this many charged tracks above the pt."""
    vertex_merge_mm: float = 1.0
    """Interactions closer than this in z are reconstructed as one vertex."""

    def __post_init__(self):
        check_positive(self, "tracker_abs_eta_max", "track_z_resolution_mm", "association_window_mm",
                       "ghost_spacing", "rho_radius", "rho_ghost_spacing", "rho_abs_eta_max", "vertex_min_tracks")
        check_non_negative(self, "vertex_track_pt_min_gev", "vertex_merge_mm")


@dataclass(frozen=True)
class DetectorConfig:
    """The whole detector response, one section per object."""

    leptons: LeptonConfig = field(default_factory=LeptonConfig)
    jets: JetConfig = field(default_factory=JetConfig)
    btag: BTagConfig = field(default_factory=BTagConfig)
    met: MetConfig = field(default_factory=MetConfig)
    fatjets: FatJetConfig = field(default_factory=FatJetConfig)
    pileup: PileupResponseConfig = field(default_factory=PileupResponseConfig)


# ---------------------------------------------------------------- kinematics

def kinematics(px, py, pz, e):
    """pt, eta, phi, mass (float64 numpy, any shape) from Cartesian four-momenta."""
    px, py, pz, e = (np.asarray(v, dtype=np.float64) for v in (px, py, pz, e))
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    phi = wrap_phi(np.arctan2(py, px))
    mass = np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))
    return pt, eta, phi, mass


def wrap_phi(phi):
    """Angles mapped into [-pi, pi)."""
    return (np.asarray(phi) + math.pi) % (2 * math.pi) - math.pi


def delta_r(eta1, phi1, eta2, phi2):
    """Distance in (eta, phi), phi difference wrapped; broadcasts numpy or awkward arrays."""
    dphi = (phi1 - phi2 + math.pi) % (2 * math.pi) - math.pi
    return np.sqrt((eta1 - eta2) ** 2 + dphi ** 2)


def _flat_draw(template: ak.Array, draw) -> ak.Array:
    """Apply a flat numpy draw `draw(n)` to a jagged (events, objects) array's layout."""
    counts = ak.num(template, axis=1)
    return ak.unflatten(draw(int(ak.sum(counts))), counts)


# ---------------------------------------------------------------- hadron flavour

def heavy_flavour(pid: np.ndarray, quark: int) -> np.ndarray:
    """Hadrons (PDG codes, any shape) carrying net flavour `quark` (5 = b, 4 = c); (...) bool.

    Mesons have the heavy quark as the hundreds digit (511, 421, 541); baryons as the
    thousands digit (5122, 4122). Quarkonia (553, 443) carry no net flavour and are excluded.
    """
    a = np.abs(np.asarray(pid))
    hundreds, tens, thousands = (a // 100) % 10, (a // 10) % 10, (a // 1000) % 10
    meson = (thousands == 0) & (hundreds == quark) & (tens != quark)
    baryon = thousands == quark
    return (a > 100) & (a < 1_000_000) & (meson | baryon)


def weakly_decaying(is_flavoured: np.ndarray, mother: np.ndarray) -> np.ndarray:
    """Flavoured hadrons with no flavoured daughter: flat (P,) bool.

    `mother` holds each particle's first mother as a flat (global) index, -1 for none.
    A flavoured hadron whose daughter is also flavoured (B* -> B gamma) is not the last one.
    """
    last = is_flavoured.copy()
    child = np.flatnonzero(is_flavoured & (mother >= 0))
    parents = mother[child]
    last[parents[is_flavoured[parents]]] = False
    return last


def jet_flavour(jets: ak.Array, b_hadrons: ak.Array, c_hadrons: ak.Array, match_dr: float) -> ak.Array:
    """Per jet: 5 if a B hadron lies within match_dr, else 4 for a C hadron, else 0. (E, J) int8.

    All inputs are jagged (events, objects) records with eta and phi.
    """
    def near(hadrons):
        jet, had = ak.unzip(ak.cartesian([jets, hadrons], axis=1, nested=True))
        return ak.any(delta_r(jet.eta, jet.phi, had.eta, had.phi) < match_dr, axis=2)

    is_b, is_c = near(b_hadrons), near(c_hadrons)
    return ak.values_astype(ak.where(is_b, 5, ak.where(is_c, 4, 0)), np.int8)


# ---------------------------------------------------------------- leptons

def relative_isolation(leptons: ak.Array, particles: ak.Array, cone: float) -> ak.Array:
    """Scalar pt sum of other particles within dR < cone, over the lepton pt. (E, L) float64.

    Both are jagged records with pt, eta, phi and `index` (a particle is not its own neighbour).
    """
    lep, part = ak.unzip(ak.cartesian([leptons, particles], axis=1, nested=True))
    inside = (delta_r(lep.eta, lep.phi, part.eta, part.phi) < cone) & (lep.index != part.index)
    return ak.sum(ak.where(inside, part.pt, 0.0), axis=2) / leptons.pt


def efficiency_mask(objects: ak.Array, efficiency, rng: np.random.Generator) -> ak.Array:
    """Per object, True with probability `efficiency` (a number or a matching jagged array)."""
    u = _flat_draw(objects, rng.random)
    return u < efficiency


def smear_factor(rel_sigma: np.ndarray, rng: np.random.Generator, floor: float = 0.01) -> np.ndarray:
    """Gaussian response factors 1 + sigma * z, floored at `floor` so momenta stay positive."""
    rel_sigma = np.asarray(rel_sigma, dtype=np.float64)
    return np.maximum(1.0 + rel_sigma * rng.standard_normal(rel_sigma.shape), floor)


def jet_resolution(pt: np.ndarray, cfg: JetConfig) -> np.ndarray:
    """Relative jet pt resolution sigma(pt)/pt = a/sqrt(pt) (+) c, for pt in GeV."""
    pt = np.maximum(np.asarray(pt, dtype=np.float64), 1e-3)
    return np.hypot(cfg.stochastic / np.sqrt(pt), cfg.constant)


# ---------------------------------------------------------------- b-tag and MET

def btag_discriminant(flavour: np.ndarray, cfg: BTagConfig, rng: np.random.Generator) -> np.ndarray:
    """A discriminant in [0, 1] per jet, (J,) float32, from flat (J,) flavours (5, 4, other).

    One uniform draw u per jet: u < rate(flavour) tags the jet, so `btag > working_point`
    happens with exactly the configured efficiency or mistag rate. The position inside the
    tagged (or untagged) interval is v**shape, so tagged jets pile up near 1, untagged near 0.
    """
    flavour = np.asarray(flavour)
    rate = np.where(flavour == 5, cfg.b_efficiency,
                    np.where(flavour == 4, cfg.c_mistag, cfg.light_mistag))
    u = rng.random(flavour.shape)
    tagged = u < rate
    v = np.where(tagged, u / np.maximum(rate, 1e-12), (u - rate) / np.maximum(1.0 - rate, 1e-12))
    v = np.clip(v, 0.0, np.nextafter(1.0, 0.0)) ** cfg.shape
    wp = cfg.working_point
    return np.where(tagged, 1.0 - (1.0 - wp) * v, wp * v).astype(np.float32)


def missing_et(px: ak.Array, py: ak.Array, cfg: MetConfig, rng: np.random.Generator):
    """MET from jagged (E, P) visible-particle momenta: (met_pt, met_phi), each (E,) float64.

    met = -sum(pt vectors), each component smeared by resolution * sqrt(sum ET).
    """
    mex = -ak.to_numpy(ak.sum(px, axis=1))
    mey = -ak.to_numpy(ak.sum(py, axis=1))
    sigma = cfg.resolution * np.sqrt(ak.to_numpy(ak.sum(np.hypot(px, py), axis=1)))
    noise = rng.standard_normal((2, len(mex)))
    mex, mey = mex + sigma * noise[0], mey + sigma * noise[1]
    return np.hypot(mex, mey), wrap_phi(np.arctan2(mey, mex))
