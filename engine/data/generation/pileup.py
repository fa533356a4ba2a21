"""Pileup: minimum-bias interactions overlaid on each hard event, from a library made once.

  library   Pythia 8 `SoftQCD:inelastic` events at the job's energy, final-state particles only,
            generated once per (seed, energy, number of events) into one Parquet file (written
            atomically; its settings are checked when it is reused, and a broken or foreign one
            is generated again). Every task of a job, and every rerun, reads the same library.
  overlay   each hard event gets n ~ Poisson(mu) library events drawn with replacement; every
            interaction, the hard one included, sits at a vertex z ~ Gaussian(0, sigma_z), the
            LHC's luminous region. The draws come from the task's own generator, so the same seed
            gives the same overlay whatever runs the task. Merging is columnar (index arithmetic
            over whole batches, no loop per event).

Eras (`PROFILES`): mean interactions per crossing from the CMS luminosity public results
(about 9 in 2011 at 7 TeV, about 11-20 in 2015 at 13 TeV: 15 is taken); luminous-region
lengths sigma_z of about 5.6 cm (2011) and 4.6 cm (2015), the lengths of CMS's fitted beam
spot in those years (approximate figures).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.config import check_positive
from engine.data.generation.detector import kinematics
from engine.data.generation.processes import Process, make_pythia
from engine.errors import InputError
from engine.files import atomic_path, make_folder

MINBIAS = Process("minbias", "events", 7000.0, ("SoftQCD:inelastic = on",),
                  "inelastic pp (non-diffractive and diffractive): pileup", 10.0)
LIBRARY_TAG = 0x70696C65
"""Mixed into the job's seed for the library's Pythia seed, apart from every task's seeds."""
LIBRARY_BATCH = 1000
LIBRARY_KEY = b"engine_pileup"
LIBRARY_FIELDS = ("px", "py", "pz", "e", "mass", "id")


@dataclass(frozen=True)
class Era:
    """An LHC running period: mean pileup and luminous-region length."""

    mu: float
    sigma_z_mm: float
    ecm_gev: float
    """The era's proton-proton energy."""


PROFILES = {"2011": Era(mu=9.0, sigma_z_mm=56.0, ecm_gev=7000.0),
            "2015": Era(mu=15.0, sigma_z_mm=46.0, ecm_gev=13000.0)}


@dataclass(frozen=True)
class PileupConfig:
    """What is overlaid on each hard event."""

    mu: float
    """Mean number of pileup interactions per event (Poisson)."""
    sigma_z_mm: float
    """Gaussian length of the luminous region along the beam, mm."""
    library_events: int = 2000
    """Minimum-bias events in the library (drawn with replacement)."""
    profile: str | None = None
    """The era the settings came from (`PROFILES`), or None."""

    def __post_init__(self):
        check_positive(self, "mu", "sigma_z_mm", "library_events")


def era_for(ecm_gev: float) -> Era:
    """The era whose energy is nearest `ecm_gev` (7 and 8 TeV: 2011; 13 TeV: 2015)."""
    return min(PROFILES.values(), key=lambda era: abs(era.ecm_gev - ecm_gev))


# ---------------------------------------------------------------- the library

def library_settings(cfg: PileupConfig, ecm_gev: float, seed: int) -> dict:
    """Everything that makes a library (recorded in it and checked on reuse)."""
    return {"generator": "pythia8", "generator_version": version("pythia8mc"),
            "process_settings": list(MINBIAS.settings), "ecm_gev": ecm_gev, "seed": seed,
            "pythia_seed": library_seed(seed), "events": cfg.library_events}


def library_seed(seed: int) -> int:
    state = np.random.SeedSequence([seed, LIBRARY_TAG]).generate_state(1)[0]
    return int(state) % 900_000_000 + 1


def library_path(folder: Path, cfg: PileupConfig, ecm_gev: float, seed: int) -> Path:
    return Path(folder) / f"minbias-{ecm_gev:.0f}GeV-seed{seed}-{cfg.library_events}.parquet"


def ensure_library(folder: Path, cfg: PileupConfig, ecm_gev: float, seed: int) -> Path:
    """The library's path, generated (atomically) unless a valid one with these settings is there."""
    path = library_path(folder, cfg, ecm_gev, seed)
    settings = library_settings(cfg, ecm_gev, seed)
    if path.exists():
        problem = _library_problem(path, settings)
        if problem is None:
            return path
        warnings.warn(f"{path}: {problem}: generating the pileup library again", stacklevel=2)
    make_folder(Path(folder), "the pileup library folder")
    table = generate_library(settings)
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({LIBRARY_KEY: json.dumps(settings).encode()}),
                       tmp, compression="zstd", write_page_checksum=True)
    return path


def generate_library(settings: dict) -> pa.Table:
    """Final-state particles of settings['events'] minimum-bias events: one row per event."""
    pythia = make_pythia(MINBIAS, settings["ecm_gev"], settings["pythia_seed"])
    chunks, left = [], settings["events"]
    while left > 0:
        prt = pythia.nextBatch(min(LIBRARY_BATCH, left)).prt
        if len(prt) == 0:
            raise InputError("--ecm", f"Pythia generated no minimum-bias event at {settings['ecm_gev']:g} GeV")
        prt = prt[prt.status > 0]
        chunks.append(ak.zip({"px": prt.p.px, "py": prt.p.py, "pz": prt.p.pz, "e": prt.p.e,
                              "mass": prt.m, "id": prt.id}))
        left -= len(prt)
    particles = ak.concatenate(chunks)
    particles = ak.zip({k: ak.values_astype(particles[k], np.int32 if k == "id" else np.float32)
                        for k in LIBRARY_FIELDS})
    return pa.table({"particles": ak.to_arrow(particles, extensionarray=False)})


def _library_problem(path: Path, settings: dict) -> str | None:
    """None for a readable library with `settings`, else what is wrong with it."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        found = json.loads((pf.schema_arrow.metadata or {}).get(LIBRARY_KEY, b"null"))
    except (OSError, pa.ArrowException, ValueError) as exc:
        return f"unreadable ({type(exc).__name__})"
    if found != settings:
        return "made with other settings"
    if pf.metadata.num_rows != settings["events"]:
        return "holds the wrong number of events"
    return None


@dataclass(frozen=True)
class Library:
    """Flat particle arrays of the library's events: `fields[name]` (P,) for LIBRARY_FIELDS and
    pt, eta, phi, charge; event offsets (N + 1,)."""

    fields: dict
    offsets: np.ndarray

    @property
    def events(self) -> int:
        return len(self.offsets) - 1


def load_library(path: Path, charge_of: Callable[[np.ndarray], np.ndarray]) -> Library:
    """Read a library written by `ensure_library` (pages verified); `charge_of` maps PDG ids to
    charges."""
    try:
        table = pq.ParquetFile(path, page_checksum_verification=True).read()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise InputError(path, f"unreadable pileup library ({type(exc).__name__})") from None
    particles = ak.from_arrow(table["particles"])
    counts = ak.to_numpy(ak.num(particles, axis=1))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = ak.flatten(particles)
    fields = {k: ak.to_numpy(flat[k]).astype(np.int64 if k == "id" else np.float64)
              for k in LIBRARY_FIELDS}
    pt, eta, phi, _ = kinematics(fields["px"], fields["py"], fields["pz"], fields["e"])
    fields.update(pt=pt, eta=eta, phi=phi, charge=charge_of(fields["id"]))
    return Library(fields, offsets)


# ---------------------------------------------------------------- the overlay

@dataclass(frozen=True)
class Overlay:
    """Pileup of one batch of E hard events.

    n_pileup (E,) interactions overlaid; hard_z (E,) mm; particles: flat library-particle arrays
    (Q,) with `vertex` (1.. within its event) and `z` (mm); counts (E,) pileup particles per event.
    """

    n_pileup: np.ndarray
    hard_z: np.ndarray
    particles: dict
    counts: np.ndarray


def draw_overlay(n_events: int, cfg: PileupConfig, library: Library,
                 rng: np.random.Generator) -> Overlay:
    """Poisson numbers of interactions, library events with replacement, vertex z's (in that order)."""
    n_pileup = rng.poisson(cfg.mu, n_events)
    chosen = rng.integers(0, library.events, int(n_pileup.sum()))
    z = rng.normal(0.0, cfg.sigma_z_mm, n_events + len(chosen))
    owner = np.repeat(np.arange(n_events), n_pileup)
    vertex = np.arange(len(chosen)) - np.repeat(np.cumsum(n_pileup) - n_pileup, n_pileup) + 1
    sizes = np.diff(library.offsets)[chosen]
    take = np.repeat(library.offsets[chosen] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
    particles = {k: v[take] for k, v in library.fields.items()}
    particles["vertex"] = np.repeat(vertex, sizes)
    particles["z"] = np.repeat(z[n_events:], sizes)
    counts = np.bincount(owner, weights=sizes, minlength=n_events).astype(np.int64)
    return Overlay(n_pileup, z[:n_events], particles, counts)


def merge(flat: dict, counts: np.ndarray, overlay: Overlay) -> tuple[dict, np.ndarray]:
    """Append each event's pileup particles after its own: the merged flat arrays and counts.

    `flat` holds the hard events' arrays id, status, mother1, daughter1, daughter2, px, py, pz,
    e, mass, pt, eta, phi, charge (local mother/daughter indices stay valid: hard particles keep
    their places). Pileup
    particles get status 1, no mother or daughter; every particle gets `vertex` (0: hard) and `z`.
    """
    total = counts + overlay.counts
    starts = np.cumsum(total) - total
    hard_at = np.repeat(starts, counts) + _local_index(counts)
    pile_at = np.repeat(starts + counts, overlay.counts) + _local_index(overlay.counts)
    pile = dict(overlay.particles, status=1, mother1=0, daughter1=0, daughter2=0)
    hard = dict(flat, vertex=0, z=np.repeat(overlay.hard_z, counts))
    merged = {}
    for name, values in hard.items():
        values = np.asarray(values)
        out = np.empty(int(total.sum()), dtype=np.result_type(values, np.asarray(pile[name])))
        out[hard_at] = values
        out[pile_at] = pile[name]
        merged[name] = out
    return merged, total


def _local_index(counts: np.ndarray) -> np.ndarray:
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def check_mu(mu: float) -> None:
    if not (math.isfinite(mu) and mu >= 0):
        raise InputError("--pileup", f"must be a mean number of interactions >= 0, got {mu:g}")
