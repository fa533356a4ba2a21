"""Event selections, applied column-wise to awkward event records before they are written.

A selection has two steps: object cuts (drop leptons and jets outside pt/eta windows) and
event cuts (object counts). Presets:
  madrazo2017  exactly one lepton (e or mu) with pt > 20 GeV; jets pt > 30 GeV, |eta| < 2.4 (default)
  ochoa2023    at least two muons and at least one jet (pt > 30 GeV, |eta| < 2.4)
  none         keep every event and every object
A YAML file with the fields of `SelectionConfig` may be given instead of a preset name.
Large-radius jets: pt > 300 GeV, |eta| < 2.4 unless `none`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import awkward as ak
import numpy as np

from engine.config import check_non_negative, from_dict, load_yaml
from engine.errors import InputError


@dataclass(frozen=True)
class SelectionConfig:
    """Object and event cuts. Counts use objects that pass the object cuts."""

    name: str = "madrazo2017"
    lepton_pt_min_gev: float = 20.0
    """Electrons and muons below this pt are dropped from the event."""
    lepton_abs_eta_max: float = 2.4
    n_leptons_min: int = 1
    """Minimum number of electrons + muons."""
    n_leptons_max: int = 1
    """Maximum number of electrons + muons; -1 for no limit."""
    n_muons_min: int = 0
    jet_pt_min_gev: float = 30.0
    jet_abs_eta_max: float = 2.4
    n_jets_min: int = 0
    fatjet_pt_min_gev: float = 300.0
    fatjet_abs_eta_max: float = 2.4

    def __post_init__(self):
        if self.n_leptons_max != -1 and self.n_leptons_max < self.n_leptons_min:
            raise ValueError("n_leptons_max must be -1 or at least n_leptons_min")
        check_non_negative(self, "lepton_pt_min_gev", "jet_pt_min_gev", "fatjet_pt_min_gev",
                           "lepton_abs_eta_max", "jet_abs_eta_max", "fatjet_abs_eta_max")


PRESETS = {
    "madrazo2017": SelectionConfig(),
    "ochoa2023": SelectionConfig(name="ochoa2023", lepton_pt_min_gev=10.0, n_leptons_min=0,
                                 n_leptons_max=-1, n_muons_min=2, n_jets_min=1),
    "none": SelectionConfig(name="none", lepton_pt_min_gev=0.0, lepton_abs_eta_max=math.inf,
                            n_leptons_min=0, n_leptons_max=-1, jet_pt_min_gev=0.0,
                            jet_abs_eta_max=math.inf, fatjet_pt_min_gev=0.0,
                            fatjet_abs_eta_max=math.inf),
}


def load_selection(spec: str) -> SelectionConfig:
    """A preset name (madrazo2017, ochoa2023, none) or the path of a YAML file."""
    if spec in PRESETS:
        return PRESETS[spec]
    if spec.endswith((".yaml", ".yml")) or Path(spec).exists():
        cfg = from_dict(SelectionConfig, load_yaml(spec), "selection")
        return cfg if cfg.name != "madrazo2017" else replace(cfg, name=Path(spec).stem)
    raise InputError(spec, f"unknown selection (presets: {', '.join(PRESETS)}; or a YAML file)")


def _window(objs: ak.Array, pt_min: float, abs_eta_max: float) -> ak.Array:
    return objs[(objs.pt > pt_min) & (abs(objs.eta) < abs_eta_max)]


def select_objects(events: ak.Array, cfg: SelectionConfig) -> ak.Array:
    """Drop leptons and jets outside the object windows (returns a new array)."""
    if cfg.name == "none":
        return events
    return ak.with_field(ak.with_field(ak.with_field(
        events,
        _window(events.electrons, cfg.lepton_pt_min_gev, cfg.lepton_abs_eta_max), "electrons"),
        _window(events.muons, cfg.lepton_pt_min_gev, cfg.lepton_abs_eta_max), "muons"),
        _window(events.jets, cfg.jet_pt_min_gev, cfg.jet_abs_eta_max), "jets")


def event_mask(events: ak.Array, cfg: SelectionConfig) -> np.ndarray:
    """Boolean mask of events passing the count cuts (objects already cut by select_objects)."""
    n_mu = ak.to_numpy(ak.num(events.muons, axis=1))
    n_lep = ak.to_numpy(ak.num(events.electrons, axis=1)) + n_mu
    n_jet = ak.to_numpy(ak.num(events.jets, axis=1))
    mask = (n_lep >= cfg.n_leptons_min) & (n_mu >= cfg.n_muons_min) & (n_jet >= cfg.n_jets_min)
    if cfg.n_leptons_max >= 0:
        mask &= n_lep <= cfg.n_leptons_max
    return mask


def apply_selection(events: ak.Array, cfg: SelectionConfig) -> ak.Array:
    """Object cuts, then event cuts: the events that pass, with only the objects that pass."""
    events = select_objects(events, cfg)
    return events[event_mask(events, cfg)]


def fatjet_mask(pt: np.ndarray, eta: np.ndarray, cfg: SelectionConfig) -> np.ndarray:
    """Large-radius jets passing the pt and |eta| window."""
    return (np.asarray(pt) > cfg.fatjet_pt_min_gev) & (np.abs(np.asarray(eta)) < cfg.fatjet_abs_eta_max)
