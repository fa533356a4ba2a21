"""Monte Carlo events: Pythia 8 -> detector response + FastJet -> canonical Parquet.

Generation is per event by nature, but everything after it is columnar: each worker asks Pythia
for a batch of events at once (`Pythia.nextBatch`, an awkward array of particles), applies the
detector response (`engine.data.generation.detector`) and clusters all events of the batch in
one FastJet call (its awkward interface, about twice as fast as a list of PseudoJets per event).

Tasks, not workers: the N accepted rows are cut into tasks of `task_events` rows; task i has its
own Pythia and detector generator seeded from (seed, i) and writes its own part file
(`run_task`). So the same seed gives the same parts whatever runs them; `runner` plans the tasks,
skips the complete ones, runs the others on an executor and lists the parts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import awkward as ak
import numpy as np

from engine.config import to_dict
from engine.data.canonical.parquet_io import ParquetSink
from engine.data.canonical.schema import events_table, fatjets_table
from engine.data.canonical.selection import (SelectionConfig, apply_selection, event_mask, fatjet_mask,
                                             select_objects)
from engine.data.generation import detector, pileup, subtraction
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.pileup import Overlay, PileupConfig
from engine.data.generation.jets import SOFTDROP, matched_parton, softdrop_mass
from engine.data.generation.processes import Process, get_process, make_pythia, stdout_silenced
from engine.errors import InputError

MAX_BATCH_EVENTS = 1000
"""Pythia events per nextBatch call (bounded so memory and progress stay smooth)."""
DEFAULT_TASK_EVENTS = 5000
"""Accepted rows per task: ~100 s of ttbar on one core, so Pythia's start-up costs ~1 %."""


@dataclass(frozen=True)
class GenerateJob:
    """Everything that determines the output."""

    process: str
    events: int
    """Rows to write: events (or large-radius jets) that pass the selection."""
    ecm_gev: float
    seed: int
    selection: SelectionConfig
    detector: DetectorConfig
    task_events: int = DEFAULT_TASK_EVENTS
    """Accepted rows per task (the last task takes the rest)."""
    pileup: PileupConfig | None = None
    """Minimum-bias interactions overlaid on each event; None: none."""

    def quotas(self) -> list[int]:
        """Rows of each task: task_events each, the last one the remainder."""
        full, rest = divmod(self.events, self.task_events)
        return [self.task_events] * full + ([rest] if rest else [])

    def settings(self) -> dict:
        """What makes a part: everything but the number of events (a larger run reuses the parts).

        Without pileup, neither the pileup settings nor the detector's pileup response are
        recorded (they change nothing), so such parts are those written before pileup existed.
        """
        found = {"generator": "pythia8", "generator_version": version("pythia8mc"),
                 "fastjet_version": version("fastjet"), "process": self.process,
                 "process_settings": list(get_process(self.process).settings), "ecm_gev": self.ecm_gev,
                 "seed": self.seed, "task_events": self.task_events,
                 "selection": to_dict(self.selection), "detector": to_dict(self.detector)}
        if self.pileup is None:
            del found["detector"]["pileup"]
        else:
            found["pileup"] = to_dict(self.pileup)
        if get_process(self.process).kind == "fatjets":
            found["softdrop"] = to_dict(SOFTDROP)
        return found


# ---------------------------------------------------------------- seeds and shares

def task_seeds(seed: int, task: int) -> tuple[int, np.random.Generator]:
    """Pythia's Random:seed (1..900000000) and the detector's numpy generator for one task."""
    pythia_ss, numpy_ss = np.random.SeedSequence([seed, task]).spawn(2)
    return int(pythia_ss.generate_state(1)[0]) % 900_000_000 + 1, np.random.default_rng(numpy_ss)


def overlay_rng(seed: int, task: int) -> np.random.Generator:
    """The pileup overlay's generator for one task (the third child of the task's seeds)."""
    return np.random.default_rng(np.random.SeedSequence([seed, task]).spawn(3)[2])


def make_worker_pythia(process: Process, ecm_gev: float, seed: int):
    """A quiet Pythia for one worker; FastJet's one-time banner is swallowed here as well."""
    pythia = make_pythia(process, ecm_gev, seed)
    with stdout_silenced():
        _cluster(ak.Array([[{"px": 1.0, "py": 0.0, "pz": 0.0, "E": 1.0}]]), 0.4, 0.0)
    return pythia


def _cluster(inputs: ak.Array, radius: float, pt_min: float, with_constituents: bool = False):
    """Anti-kt jets of every event at once: jagged (E, J) px/py/pz/E [, (E, J, C) indices]."""
    import fastjet

    sequence = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = sequence.inclusive_jets(pt_min)
    return (jets, sequence.constituent_index(pt_min)) if with_constituents else jets


# ---------------------------------------------------------------- particles

def batch_particles(batch: ak.Array, charge_of: Callable[[np.ndarray], np.ndarray],
                    overlay: Overlay | None = None):
    """Pythia's batch -> (E, P) jagged particle records and the flat arrays behind them.

    Fields: index (position in the event record), gidx (position in the flat arrays), id, status,
    px, py, pz, e, pt, eta, phi, mass, charge. `mother`/`daughter` are flat global indices (-1: none).
    With an overlay, each event's pileup particles follow its own, and the flat arrays also hold
    `vertex` (0: the hard interaction) and `z` (its vertex's z, mm).
    """
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt, axis=1))
    flat = {name: ak.to_numpy(ak.flatten(prt[name])) for name in ("id", "status", "mother1", "daughter1",
                                                                 "daughter2")}
    flat.update({name: ak.to_numpy(ak.flatten(prt.p[name])).astype(np.float64)
                 for name in ("px", "py", "pz", "e")}, mass=ak.to_numpy(ak.flatten(prt.m)))
    pt, eta, phi, _ = detector.kinematics(flat["px"], flat["py"], flat["pz"], flat["e"])
    flat.update(pt=pt, eta=eta, phi=phi, charge=charge_of(flat["id"]))
    if overlay is not None:
        flat, counts = pileup.merge(flat, counts, overlay)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    flat.update(gidx=np.arange(len(starts)), index=np.arange(len(starts)) - starts)
    flat["mother"] = np.where(flat["mother1"] > 0, starts + flat["mother1"], -1)
    flat["daughter"] = np.where(flat["daughter1"] > 0, starts + flat["daughter1"], -1)
    flat["daughter_last"] = np.where(flat["daughter2"] > 0, starts + flat["daughter2"], flat["daughter"])
    fields = ("index", "gidx", "id", "status", "px", "py", "pz", "e", "pt", "eta", "phi", "mass",
              "charge")
    particles = ak.unflatten(ak.zip({k: flat[k] for k in fields}), counts)
    return particles, flat, counts


def _visible(flat: dict, cfg: DetectorConfig) -> np.ndarray:
    neutrino = np.isin(np.abs(flat["id"]), detector.NEUTRINOS)
    return (flat["status"] > 0) & ~neutrino & (np.abs(flat["eta"]) < cfg.jets.abs_eta_max)


def _reconstructed(flat: dict, counts: np.ndarray, cfg: DetectorConfig, overlay: Overlay | None,
                   rng: np.random.Generator) -> np.ndarray:
    """Flat (P,) bool: the visible particles reconstruction uses, after charged-hadron subtraction
    (`cfg.pileup.chs`, one track z draw from `rng` per track) when there is pileup."""
    visible = _visible(flat, cfg)
    if overlay is None or not cfg.pileup.chs:
        return visible
    return visible & ~subtraction.chs_removed(flat, counts, overlay.hard_z, cfg.pileup, rng)


def _jagged(mask: np.ndarray, counts: np.ndarray) -> ak.Array:
    return ak.unflatten(mask, counts)


# ---------------------------------------------------------------- events

def reconstruct_events(particles: ak.Array, flat: dict, counts: np.ndarray,
                       cfg: DetectorConfig, rng: np.random.Generator,
                       overlay: Overlay | None = None, selection: SelectionConfig | None = None) -> ak.Array:
    """Detector-level events (E,) with met_pt, met_phi, electrons, muons, jets (unselected).

    With an overlay (pileup in the particles): charged-hadron subtraction before isolation and
    jets (`cfg.pileup.chs`), the rho * area jet correction (`cfg.pileup.rho_correction`), and
    the event fields n_interactions and n_vertices. MET uses every visible particle, as
    particle-flow MET does. With an overlay and a `selection`, events whose leptons fail the
    selection get no jets (the selection drops them whatever their jets), which spares their
    clustering with ghosts.
    """
    visible = _visible(flat, cfg)
    used = _reconstructed(flat, counts, cfg, overlay, rng)
    leptons = _reconstruct_leptons(particles, flat, counts, used, cfg.leptons, rng)
    jet_inputs = used.copy()
    jet_inputs[ak.to_numpy(ak.flatten(leptons.gidx))] = False
    area_cfg = cfg.pileup if overlay is not None and cfg.pileup.rho_correction else None
    inputs = particles[_jagged(jet_inputs, counts)]
    if overlay is None or selection is None:
        jets = _reconstruct_jets(inputs, cfg.jets, rng, area_cfg)
    else:
        needed = _lepton_preselection(leptons, selection)
        jets = _scatter(_reconstruct_jets(inputs[needed], cfg.jets, rng, area_cfg), needed)
    is_b = detector.weakly_decaying(detector.heavy_flavour(flat["id"], 5), flat["mother"])
    is_c = detector.weakly_decaying(detector.heavy_flavour(flat["id"], 4), flat["mother"])
    flavour = detector.jet_flavour(jets, particles[_jagged(is_b, counts)], particles[_jagged(is_c, counts)],
                              cfg.btag.match_dr)
    btag = detector.btag_discriminant(ak.to_numpy(ak.flatten(flavour)), cfg.btag, rng)
    jets = ak.with_field(jets, ak.unflatten(btag, ak.num(jets, axis=1)), "btag")
    jets = ak.with_field(jets, jets.btag > cfg.btag.working_point, "btagged")
    seen = particles[_jagged(visible, counts)]
    met_pt, met_phi = detector.missing_et(seen.px, seen.py, cfg.met, rng)
    lepton_fields = ("pt", "eta", "phi", "mass", "charge")
    electrons = leptons[abs(leptons.id) == 11]
    muons = leptons[abs(leptons.id) == 13]
    fields = {
        "met_pt": met_pt, "met_phi": met_phi,
        "electrons": ak.zip({f: electrons[f] for f in lepton_fields}),
        "muons": ak.zip({f: muons[f] for f in lepton_fields}),
        "jets": ak.zip({f: jets[f] for f in ("pt", "eta", "phi", "mass", "btag", "btagged")}),
    }
    if overlay is not None:
        fields["n_interactions"] = overlay.n_pileup
        fields["n_vertices"] = subtraction.count_vertices(flat, counts, cfg.pileup)
    return ak.zip(fields, depth_limit=1)


def _lepton_preselection(leptons: ak.Array, selection: SelectionConfig) -> np.ndarray:
    """(E,) bool: events whose reconstructed leptons pass the selection's lepton cuts."""
    cuts = replace(selection, n_jets_min=0)
    events = ak.zip({"electrons": leptons[abs(leptons.id) == 11], "muons": leptons[abs(leptons.id) == 13],
                     "jets": leptons[:, :0]}, depth_limit=1)
    return event_mask(select_objects(events, cuts), cuts)


def _scatter(objects: ak.Array, where: np.ndarray) -> ak.Array:
    """Jagged objects of the events `where` (E,) bool selects, back in all E events (empty elsewhere)."""
    counts = np.zeros(len(where), dtype=np.int64)
    counts[where] = ak.to_numpy(ak.num(objects, axis=1))
    return ak.unflatten(ak.flatten(objects), counts)


def _reconstruct_leptons(particles, flat, counts, visible, cfg: detector.LeptonConfig, rng) -> ak.Array:
    """Isolated, efficient, smeared electrons and muons (jagged records, with id and gidx)."""
    aid = np.abs(flat["id"])
    candidate = ((flat["status"] > 0) & ((aid == 11) | (aid == 13))
                 & (flat["pt"] > cfg.pt_min_gev) & (np.abs(flat["eta"]) < cfg.abs_eta_max))
    leptons = particles[_jagged(candidate, counts)]
    isolated = detector.relative_isolation(leptons, particles[_jagged(visible, counts)],
                                      cfg.isolation_cone) < cfg.isolation_max
    is_e = abs(leptons.id) == 11
    efficiency = ak.where(is_e, cfg.electron_efficiency, cfg.muon_efficiency)
    found = detector.efficiency_mask(leptons, efficiency, rng)
    leptons = leptons[isolated & found]
    is_e = ak.to_numpy(ak.flatten(abs(leptons.id) == 11))
    rel = np.where(is_e, cfg.electron_pt_resolution, cfg.muon_pt_resolution)
    factor = ak.unflatten(detector.smear_factor(rel, rng), ak.num(leptons, axis=1))
    return ak.with_field(leptons, leptons.pt * factor, "pt")


def _reconstruct_jets(inputs: ak.Array, cfg: detector.JetConfig, rng,
                      area_cfg: detector.PileupResponseConfig | None = None) -> ak.Array:
    """Anti-kt jets of the inputs, energy-smeared, above cfg.pt_min_gev: jagged pt/eta/phi/mass.

    With `area_cfg`, each jet is first scaled by max(0, 1 - rho * area / pt) (pileup subtraction).
    """
    vectors = ak.zip({"px": inputs.px, "py": inputs.py, "pz": inputs.pz, "E": inputs.e})
    if area_cfg is None:
        raw = _cluster(vectors, cfg.radius, 0.5 * cfg.pt_min_gev)
    else:
        raw, area = subtraction.antikt_with_areas(vectors, cfg.radius, 0.5 * cfg.pt_min_gev,
                                                  cfg.abs_eta_max, area_cfg.ghost_spacing)
        raw = subtraction.subtract(raw, area, subtraction.rho(vectors, area_cfg))
    n = ak.num(raw, axis=1)
    pt, eta, phi, mass = detector.kinematics(*(ak.to_numpy(ak.flatten(raw[c]))
                                               for c in ("px", "py", "pz", "E")))
    factor = detector.smear_factor(detector.jet_resolution(pt, cfg), rng)
    jets = ak.unflatten(ak.zip({"pt": pt * factor, "eta": eta, "phi": phi, "mass": mass * factor}), n)
    return jets[jets.pt > cfg.pt_min_gev]


# ---------------------------------------------------------------- large-radius jets

def reconstruct_fatjets(particles: ak.Array, flat: dict, counts: np.ndarray, cfg: DetectorConfig,
                        selection: SelectionConfig, require_higgs: bool,
                        overlay: Overlay | None = None, rng: np.random.Generator | None = None) -> ak.Array:
    """Large-radius jets passing the selection, flattened over events: (J,) records with `ibatch`
    (event in the batch), fatjet {pt, eta, phi, mass, msoftdrop, parton} (engine.data.generation.jets),
    constituents [{pt, eta, phi, charge, pid}].

    With an overlay (pileup in the particles), charged-hadron subtraction (`cfg.pileup.chs`, drawing
    track z from `rng`) removes charged pileup before clustering; neutral pileup stays in the jets
    (no area correction: the soft-drop mass is the pileup-robust mass).
    """
    seen = particles[_jagged(_reconstructed(flat, counts, cfg, overlay, rng), counts)]
    raw, cidx = _cluster(ak.zip({"px": seen.px, "py": seen.py, "pz": seen.pz, "E": seen.e}),
                         cfg.fatjets.radius, cfg.fatjets.pt_min_gev, with_constituents=True)
    pt, eta, phi, mass = detector.kinematics(*(ak.to_numpy(ak.flatten(raw[c]))
                                               for c in ("px", "py", "pz", "E")))
    n_jets = ak.to_numpy(ak.num(raw, axis=1))
    fat = ak.unflatten(ak.zip({"pt": pt, "eta": eta, "phi": phi, "mass": mass}), n_jets)
    keep = fatjet_mask(pt, eta, selection)
    if require_higgs:
        keep &= ak.to_numpy(ak.flatten(_higgs_matched(fat, particles, flat, counts, cfg.fatjets.match_dr)))
    n_seen = ak.to_numpy(ak.num(seen, axis=1))
    starts = ak.Array(np.cumsum(n_seen) - n_seen)
    flat_idx = ak.to_numpy(ak.flatten(cidx + starts, axis=None))
    source = {k: ak.to_numpy(ak.flatten(seen[k])) for k in ("pt", "eta", "phi", "charge", "id",
                                                           "px", "py", "pz", "e")}
    parts = ak.zip({**{k: source[k][flat_idx] for k in ("pt", "eta", "phi", "charge", "px", "py", "pz", "e")},
                    "pid": source["id"][flat_idx]})        # px..e only for the grooming
    constituents = ak.unflatten(parts, ak.to_numpy(ak.flatten(ak.num(cidx, axis=2))))
    ievent = np.repeat(np.arange(len(n_jets)), n_jets)
    fat = ak.with_field(fat, matched_parton(fat, flat, counts, cfg.fatjets.match_dr), "parton")
    rows = ak.zip({"ibatch": ievent, "fatjet": ak.flatten(fat), "constituents": constituents},
                  depth_limit=1)[keep]
    groomed = softdrop_mass(rows.constituents)
    return ak.with_field(rows, groomed, ["fatjet", "msoftdrop"])


def _higgs_matched(fat: ak.Array, particles, flat, counts, match_dr: float) -> ak.Array:
    """Per jet (E, J): a Higgs boson and both of its b quarks lie within match_dr of the axis."""
    d1 = flat["daughter"]
    is_h = (flat["id"] == 25) & (d1 >= 0)
    is_h[is_h] &= np.abs(flat["id"][d1[is_h]]) == 5
    first = np.where(is_h, d1, 0)
    second = np.where(is_h, flat["daughter_last"], 0)
    h = ak.zip({"eta": flat["eta"], "phi": flat["phi"],
                "eta1": flat["eta"][first], "phi1": flat["phi"][first],
                "eta2": flat["eta"][second], "phi2": flat["phi"][second]})
    higgs = ak.unflatten(h, counts)[_jagged(is_h, counts)]
    jet, hb = ak.unzip(ak.cartesian([fat, higgs], axis=1, nested=True))
    near = ((detector.delta_r(jet.eta, jet.phi, hb.eta, hb.phi) < match_dr)
            & (detector.delta_r(jet.eta, jet.phi, hb.eta1, hb.phi1) < match_dr)
            & (detector.delta_r(jet.eta, jet.phi, hb.eta2, hb.phi2) < match_dr))
    return ak.any(near, axis=2)


# ---------------------------------------------------------------- one task

def run_task(job: GenerateJob, task: int, quota: int, part_path: Path, provenance: dict,
             library: Path | None = None) -> dict:
    """Generate until `quota` rows pass the selection; write them to `part_path` atomically.

    `generated` counts the events up to the last one that gave a kept row (the rest of the last
    batch is dropped unused), so accepted / generated is the acceptance. The part's provenance is
    `provenance` plus this task's counts and Pythia's cross-section (pb); they are also returned.
    With pileup, `library` is the pileup library (engine.data.generation.pileup.ensure_library).
    """
    process = get_process(job.process)
    pythia_seed, rng = task_seeds(job.seed, task)
    pythia = make_worker_pythia(process, job.ecm_gev, pythia_seed)
    charge_of = _charge_lookup(pythia)
    pile = None if job.pileup is None else (pileup.load_library(library, charge_of), overlay_rng(job.seed, task))
    tables, generated, accepted = [], 0, 0
    while accepted < quota:
        size = _batch_size(quota - accepted, generated, accepted)
        batch = pythia.nextBatch(size)
        if len(batch) == 0:
            raise InputError("--ecm", f"Pythia generated no event of process '{process.name}' at "
                                      f"{job.ecm_gev:g} GeV in {size} tries "
                                      f"(too close to its threshold?)")
        rows = _rows(batch, process, job, rng, charge_of, task, generated, accepted, pile)
        used = len(batch)
        if len(rows) > quota - accepted:  # events after the last row kept count for nothing
            rows = rows[: quota - accepted]
            used = int(rows.ibatch[-1]) + 1
        tables.append(_table(rows, process))
        generated += used
        accepted += len(rows)
    info = pythia.infoPython()
    counts = {"task": task, "pythia_seed": pythia_seed, "generated": generated, "accepted": accepted,
              "pythia_tried": int(info.nTried()), "sigma_pb": info.sigmaGen() * 1e9,
              "sigma_err_pb": info.sigmaErr() * 1e9}
    with ParquetSink(part_path, process.kind, [process.name], {**provenance, **counts},
                     pileup=job.pileup is not None and process.kind == "events") as sink:
        for table in tables:
            sink.write(table)
    return counts


def _rows(batch, process: Process, job: GenerateJob, rng, charge_of, task: int,
          generated: int, accepted: int, pile: tuple | None = None) -> ak.Array:
    """Selected rows of one batch with weight, run (1), lumi (task + 1) and event.

    `event` numbers the task's generated events from 1 (for fat jets, which can be several per
    event, it numbers the task's jets instead), so (run, lumi, event) is unique in the dataset.
    `pile` is (library, overlay generator) with pileup, else None.
    """
    overlay = None if pile is None else pileup.draw_overlay(len(batch), job.pileup, pile[0], pile[1])
    particles, flat, counts = batch_particles(batch, charge_of, overlay)
    if process.kind == "fatjets":
        rows = reconstruct_fatjets(particles, flat, counts, job.detector, job.selection,
                                   require_higgs=process.name == "hbb", overlay=overlay, rng=rng)
        number = accepted + 1 + np.arange(len(rows))
    else:
        events = reconstruct_events(particles, flat, counts, job.detector, rng, overlay, job.selection)
        events = ak.with_field(events, np.arange(len(events)), "ibatch")
        rows = apply_selection(events, job.selection)
        number = generated + 1 + rows.ibatch
    n = len(rows)
    header = {"weight": np.ones(n, np.float32), "run": np.ones(n, np.int64),
              "lumi": np.full(n, task + 1, np.int64), "event": ak.to_numpy(number).astype(np.int64)}
    for name, values in header.items():
        rows = ak.with_field(rows, values, name)
    return rows


def _table(rows: ak.Array, process: Process):
    build = fatjets_table if process.kind == "fatjets" else events_table
    return build(rows, process.name, [process.name])


def _batch_size(remaining: int, generated: int, accepted: int) -> int:
    """Events to ask for: enough for the remaining rows at the acceptance seen so far."""
    acceptance = (accepted + 1) / (generated + 2)
    return int(min(MAX_BATCH_EVENTS, max(8, math.ceil(1.2 * remaining / acceptance))))


def _charge_lookup(pythia) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised PDG id -> electric charge (int8), asking Pythia once per new id."""
    cache: dict[int, int] = {}

    def charge_of(pid: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(pid, return_inverse=True)
        for value in unique.tolist():
            if value not in cache:
                cache[value] = int(round(pythia.particleData.charge(value)))
        return np.array([cache[v] for v in unique.tolist()], dtype=np.int8)[inverse]

    return charge_of
