"""What pileup does to the reconstructed events, on the same hard events with and without it.

One batch of Pythia events per process is reconstructed twice (no pileup; Poisson(mu) pileup from
the library, with the default CHS and rho * area correction), and for each:

  jets per selected event   jets of the 2017 selection (pt > 30 GeV, |eta| < 2.4) in the events
                            that pass it;
  MET resolution            RMS of reconstructed MET minus the true neutrinos' pT vector, per
                            component, over all events (GeV);
  isolation efficiency      fraction of the true prompt leptons (final-state e / mu from a W or Z,
                            pt > 20 GeV, |eta| < 2.4) whose relative isolation, computed on the
                            particles reconstruction uses (after CHS), is below the cut.
"""
from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import numpy as np

from engine.data.canonical.selection import apply_selection, load_selection
from engine.data.generation import detector, pileup, subtraction
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.generate import (_charge_lookup, batch_particles, make_worker_pythia,
                                             reconstruct_events)
from engine.data.generation.processes import get_process

SELECTION = "madrazo2017"
PROMPT_PARENTS = (23, 24)


def prompt_leptons(flat: dict, pt_min: float, abs_eta_max: float) -> np.ndarray:
    """Flat (P,) bool: final-state e / mu within the window whose first ancestor of another
    flavour is a W or Z (copies of the lepton itself, after radiation, are walked through)."""
    aid = np.abs(flat["id"])
    lepton = ((flat["status"] > 0) & ((aid == 11) | (aid == 13)) & (flat["pt"] > pt_min)
              & (np.abs(flat["eta"]) < abs_eta_max))
    current = np.flatnonzero(lepton)
    for _ in range(100):
        mother = flat["mother"][current]
        same = (mother >= 0) & (flat["id"][np.maximum(mother, 0)] == flat["id"][current])
        if not same.any():
            break
        current = np.where(same, mother, current)
    mother = flat["mother"][current]
    parent = np.where(mother >= 0, np.abs(flat["id"][np.maximum(mother, 0)]), 0)
    prompt = np.zeros(len(aid), dtype=bool)
    prompt[np.flatnonzero(lepton)] = np.isin(parent, PROMPT_PARENTS)
    return prompt


def _figures(particles, flat, counts, events, cfg: DetectorConfig, overlay, rng) -> dict:
    jagged = lambda mask: ak.unflatten(mask, counts)  # noqa: E731
    selected = apply_selection(events, load_selection(SELECTION))
    neutrino = (flat["status"] > 0) & np.isin(np.abs(flat["id"]), detector.NEUTRINOS)
    nu = particles[jagged(neutrino)]
    dx = ak.to_numpy(events.met_pt * np.cos(events.met_phi) - ak.sum(nu.px, axis=1))
    dy = ak.to_numpy(events.met_pt * np.sin(events.met_phi) - ak.sum(nu.py, axis=1))
    visible = (flat["status"] > 0) & ~neutrino & (np.abs(flat["eta"]) < cfg.jets.abs_eta_max)
    if overlay is not None and cfg.pileup.chs:
        visible &= ~subtraction.chs_removed(flat, counts, overlay.hard_z, cfg.pileup, rng)
    prompt = particles[jagged(prompt_leptons(flat, 20.0, 2.4))]
    isolation = detector.relative_isolation(prompt, particles[jagged(visible)], cfg.leptons.isolation_cone)
    passed = ak.to_numpy(ak.flatten(isolation < cfg.leptons.isolation_max))
    return {"jets_per_selected_event": float(ak.mean(ak.num(selected.jets, axis=1))) if len(selected) else 0.0,
            "selected_fraction": len(selected) / len(events),
            "met_resolution_x_gev": math.sqrt(float(np.mean(dx ** 2))),
            "met_resolution_y_gev": math.sqrt(float(np.mean(dy ** 2))),
            "isolation_efficiency": float(passed.mean()) if len(passed) else 0.0,
            "prompt_leptons": int(len(passed))}


def measure(process: str, events: int, mu: float, library_path: Path, seed: int = 1) -> list[dict]:
    """Records of the figures above for `events` generated events, mu = 0 and mu."""
    proc = get_process(process)
    pythia = make_worker_pythia(proc, proc.ecm_gev, seed)
    charge_of = _charge_lookup(pythia)
    batch = pythia.nextBatch(events)
    library = pileup.load_library(library_path, charge_of)
    cfg = DetectorConfig()
    records = []
    for value in (0.0, mu):
        overlay = None
        if value:
            era = pileup.era_for(proc.ecm_gev)
            overlay = pileup.draw_overlay(len(batch), pileup.PileupConfig(mu=value, sigma_z_mm=era.sigma_z_mm),
                                          library, np.random.default_rng(seed))
        particles, flat, counts = batch_particles(batch, charge_of, overlay)
        rng = np.random.default_rng([seed, 1])
        reco = reconstruct_events(particles, flat, counts, cfg, rng, overlay)
        figures = _figures(particles, flat, counts, reco, cfg, overlay, np.random.default_rng([seed, 2]))
        params = {"process": process, "ecm": proc.ecm_gev, "pileup_mu": value, "generated": len(batch),
                  "selection": SELECTION, "prompt_leptons": figures.pop("prompt_leptons")}
        units = {"jets_per_selected_event": "jets", "selected_fraction": "fraction",
                 "met_resolution_x_gev": "GeV", "met_resolution_y_gev": "GeV", "isolation_efficiency": "fraction"}
        records += [{"name": f"pileup_{name}", "value": v, "unit": units[name], "params": params}
                    for name, v in figures.items()]
    return records
