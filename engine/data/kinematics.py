"""Event-level kinematic variables from padded objects (the `engine.data.objects` layout).

types (B, N) int8 and features (B, N, 6) float32 in, (B,) float64 out [GeV], NaN where an event
lacks the objects a variable needs. `mass_variable` picks the variable that exists under the
data's selection: the dilepton mass when most events have two leptons (Z -> ll selections), the
lepton-MET transverse mass otherwise (one-lepton selections, as the 2017 study's); jet datasets
use the large-R jet's mass.
"""
from __future__ import annotations

import numpy as np

from engine.data import objects

VARIABLES = {"dilepton_mass": "dilepton mass m(ll) [GeV]",
             "transverse_mass": "transverse mass mT(lepton, MET) [GeV]"}
"""Name -> axis label of each variable `mass_variable` can choose for events."""
FATJET_MASS = ("fatjet_mass", "large-R jet mass [GeV]")
"""The mass variable of large-radius-jet datasets: the jet's own mass (fatjet (B, 4), column 3)."""


LEPTONS = np.array([objects.ELECTRON, objects.MUON])


def _leading(types: np.ndarray, features: np.ndarray, wanted: np.ndarray, n: int):
    """Features (B, n, F) float64 of the `n` highest-pt objects whose type is in `wanted`, and how
    many such objects each event has (B,)."""
    hit = np.isin(types, wanted)
    key = np.where(hit, -features[..., objects.F_PT], np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(features, order[..., None], axis=1).astype(np.float64), hit.sum(axis=1)


def dilepton_mass(types: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(B,) invariant mass of the two leading leptons (e or mu), NaN with fewer than two."""
    lep, count = _leading(types, features, LEPTONS, 2)
    pt, eta, phi, m = (lep[..., i] for i in (objects.F_PT, objects.F_ETA, objects.F_PHI, objects.F_MASS))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    m2 = e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2
    return np.where(count >= 2, np.sqrt(np.maximum(m2, 0.0)), np.nan)


def transverse_mass(types: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(B,) mT = sqrt(2 pT(l) MET (1 - cos dphi)) of the leading lepton and the MET, NaN without a lepton."""
    lep, count = _leading(types, features, LEPTONS, 1)
    met, has_met = _leading(types, features, np.array([objects.MET]), 1)
    dphi = lep[:, 0, objects.F_PHI] - met[:, 0, objects.F_PHI]
    mt2 = 2.0 * lep[:, 0, objects.F_PT] * met[:, 0, objects.F_PT] * (1.0 - np.cos(dphi))
    return np.where((count >= 1) & (has_met >= 1), np.sqrt(np.maximum(mt2, 0.0)), np.nan)


def lepton_counts(types: np.ndarray) -> np.ndarray:
    """(B,) number of electrons and muons of each event."""
    return np.isin(types, LEPTONS).sum(axis=1)


def mass_variable(n_leptons: np.ndarray) -> str:
    """'dilepton_mass' if at least half the events have two or more leptons, else 'transverse_mass'."""
    return "dilepton_mass" if len(n_leptons) and np.mean(n_leptons >= 2) >= 0.5 else "transverse_mass"


def compute(name: str, types: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Variable `name` (a key of VARIABLES) of every event."""
    return {"dilepton_mass": dilepton_mass, "transverse_mass": transverse_mass}[name](types, features)
