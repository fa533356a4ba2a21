"""The physics processes `python -m engine generate` knows: Pythia 8 settings per process.

Two kinds of output:
  events   one row per event (leptons, R=0.4 jets, MET) for the event-image and set studies;
  fatjets  one row per large-radius jet (R=0.8, with constituents) for the jet-image study.

Default centre-of-mass energies follow the studies: 7 TeV for the 2011 CMS Open Data event
samples (Madrazo et al. 2017), 13 TeV for the Hbb / QCD jet samples (CMS Open Data Run II).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

from engine.errors import InputError

QUIET_SETTINGS = (
    "Print:quiet = on",             # no banner, init tables or statistics
    "Print:errors = off",           # Pythia's per-event warnings (kept in its statistics)
    "Next:numberCount = 0",         # no "n events generated" lines
    "Next:numberShowEvent = 0",     # no event listing
    "Next:numberShowProcess = 0",
    "Next:numberShowInfo = 0",
)
"""Settings every generator gets, so nothing floods the terminal."""


@dataclass(frozen=True)
class Process:
    """One process: what Pythia generates and which kind of rows come out."""

    name: str
    kind: str
    """'events' or 'fatjets'."""
    ecm_gev: float
    """Default proton-proton centre-of-mass energy."""
    settings: tuple[str, ...]
    """Pythia `readString` lines (beams and energy are added by the generator)."""
    description: str
    threshold_gev: float
    """Lowest centre-of-mass energy that makes the final state on shell (masses, or 2 x pT-hat min);
    below it Pythia would only sample far off-shell tails, if anything."""


TOP_MASS_GEV = 172.5
W_MASS_GEV = 80.4
_LEPTONIC_W = ("24:onMode = off", "24:onIfAny = 11 13")
_LEPTONIC_Z = ("23:onMode = off", "23:onIfAny = 11 13")
_H_TO_BB = ("25:m0 = 125.0", "25:onMode = off", "25:onIfAny = 5")

PROCESSES: dict[str, Process] = {p.name: p for p in (
    Process("ttbar", "events", 7000.0,
            ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
            "top-quark pairs, all decays (as the inclusive TTJets sample)", 2 * TOP_MASS_GEV),
    Process("wjets", "events", 7000.0,
            ("WeakSingleBoson:ffbar2W = on",) + _LEPTONIC_W,
            "inclusive W -> e nu / mu nu; jets from the parton shower", W_MASS_GEV),
    Process("dy", "events", 7000.0,
            ("WeakSingleBoson:ffbar2gmZ = on", "PhaseSpace:mHatMin = 50.0") + _LEPTONIC_Z,
            "Drell-Yan Z/gamma* -> ee / mumu with m(ll) > 50 GeV", 50.0),
    Process("single_top", "events", 7000.0,
            ("Top:qq2tq(t:W) = on", "Top:ffbar2tqbar(s:W) = on"),
            "single top, t- and s-channel, all decays", TOP_MASS_GEV),
    Process("ttH", "events", 7000.0,
            ("HiggsSM:gg2Httbar = on", "HiggsSM:qqbar2Httbar = on", "25:m0 = 125.0"),
            "top-quark pairs with a 125 GeV Higgs boson, all decays", 2 * TOP_MASS_GEV + 125.0),
    Process("hbb", "fatjets", 13000.0,
            ("HiggsSM:gg2Hg(l:t) = on", "HiggsSM:qg2Hq(l:t) = on", "HiggsSM:qqbar2Hg(l:t) = on",
             "PhaseSpace:pTHatMin = 250.0") + _H_TO_BB,
            "boosted H -> bb recoiling against a jet (pT-hat > 250 GeV); jets matched to H and both b",
            2 * 250.0),
    Process("qcd", "fatjets", 13000.0,
            ("HardQCD:all = on", "PhaseSpace:pTHatMin = 250.0"),
            "QCD 2 -> 2 with pT-hat > 250 GeV; every large-radius jet that passes the selection",
            2 * 250.0),
)}


def get_process(name: str) -> Process:
    """The process called `name`; an unknown name is an InputError listing the known ones."""
    try:
        return PROCESSES[name]
    except KeyError:
        raise InputError(name, f"unknown process (known: {', '.join(PROCESSES)})") from None


def check_energy(process: Process, ecm_gev: float) -> None:
    """InputError naming --ecm unless `ecm_gev` is above the process's threshold."""
    if not ecm_gev > process.threshold_gev:
        raise InputError("--ecm", f"{ecm_gev:g} GeV is not above the threshold of process "
                                  f"'{process.name}' ({process.threshold_gev:g} GeV)")


def pythia_settings(process: Process, ecm_gev: float, seed: int) -> list[str]:
    """Every `readString` line for one generator: quiet output, beams, seed, the process."""
    if not 1 <= seed <= 900_000_000:
        raise ValueError(f"Pythia's Random:seed must be in 1..900000000, got {seed}")
    return [*QUIET_SETTINGS,
            "Beams:idA = 2212", "Beams:idB = 2212", f"Beams:eCM = {ecm_gev:.1f}",
            "Random:setSeed = on", f"Random:seed = {seed}",
            *process.settings]


@contextlib.contextmanager
def stdout_silenced():
    """Point file descriptor 1 at /dev/null (C++ banners bypass sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def make_pythia(process: Process, ecm_gev: float, seed: int):
    """An initialised Pythia for `process` that prints nothing.

    A setting Pythia rejects can only be the energy (the process settings are fixed and the seed
    checked), so that is an InputError naming --ecm.
    """
    import pythia8mc

    check_energy(process, ecm_gev)
    with stdout_silenced():
        pythia = pythia8mc.Pythia("", False)
        ok = all(pythia.readString(line) for line in pythia_settings(process, ecm_gev, seed))
        ok = ok and pythia.init()
    if not ok:
        raise InputError("--ecm", f"Pythia cannot initialise process '{process.name}' "
                                  f"at {ecm_gev:g} GeV")
    return pythia
