"""Jet-level truth and grooming of the large-radius jets: soft-drop mass and the matched parton.

Both are computed column-wise on a whole batch of jets and draw no random numbers, so the jets
themselves (and everything else a seed makes) are unchanged by them.

  msoftdrop  the soft-drop groomed mass (Larkoski, Marzani, Soyez, Thaler 2014) with the CMS/ATLAS
             parameters beta = 0, z_cut = 0.1, R0 = 0.8: the jet's constituents are reclustered
             with Cambridge/Aachen (R = 1000, so they always form one jet) and declustered from the
             top; a branching j -> j1 j2 passes when min(pt1, pt2) / (pt1 + pt2) > z_cut (dR12/R0)^beta,
             else the softer branch is dropped and the harder one declustered further. The mass of
             what is left (a single particle, at worst) is msoftdrop; it never exceeds the jet mass.
             One FastJet call for all jets of a batch.
  parton     |PDG id| of the outgoing particle of the hard process (the matrix element: Pythia's
             status -22 or -23 with an incoming hard-process parton, status -21, as its mother;
             the Higgs boson before its decay in hbb, the two partons of a QCD 2 -> 2) that lies
             within dR < match_dr of the jet axis; the highest-pt one if several do, 0 if none.
             Its direction is the matrix element's, before the shower's recoil. hbb jets carry 25,
             QCD jets 1-5 or 21, a jet from neither outgoing parton 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from engine.data.generation import detector

RECLUSTER_RADIUS = 1000.0
"""FastJet's largest allowed R: the constituents always cluster into one C/A jet."""
HARD_INCOMING, HARD_INTERMEDIATE, HARD_OUTGOING = -21, -22, -23
"""Pythia's status codes of the hardest subprocess (decayed resonances are intermediate)."""


@dataclass(frozen=True)
class SoftDrop:
    """Soft-drop grooming parameters (the CMS/ATLAS standard)."""

    beta: float = 0.0
    z_cut: float = 0.1
    r0: float = 0.8


SOFTDROP = SoftDrop()


def softdrop_mass(constituents: ak.Array, grooming: SoftDrop = SOFTDROP) -> np.ndarray:
    """Groomed mass (J,) float64 [GeV] of each jet of a jagged (J, C) array of constituents with
    fields px, py, pz, e (every jet non-empty)."""
    import fastjet

    if len(constituents) == 0:
        return np.zeros(0, np.float64)
    inputs = ak.zip({"px": constituents.px, "py": constituents.py, "pz": constituents.pz,
                     "E": constituents.e})
    sequence = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.cambridge_algorithm,
                                                                     RECLUSTER_RADIUS))
    groomed = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=grooming.beta,
                                                        symmetry_cut=grooming.z_cut, R0=grooming.r0)
    kept = groomed.constituents
    return detector.kinematics(*(ak.to_numpy(ak.sum(kept[c], axis=1)) for c in ("px", "py", "pz", "E")))[3]


def hard_process_outgoing(flat: dict) -> np.ndarray:
    """Mask over the flat particle arrays: the outgoing particles of the hardest subprocess."""
    status, mother = flat["status"], flat["mother"]
    outgoing = np.isin(status, (HARD_INTERMEDIATE, HARD_OUTGOING)) & (mother >= 0)
    outgoing[outgoing] &= status[mother[outgoing]] == HARD_INCOMING
    return outgoing


def matched_parton(fat: ak.Array, flat: dict, counts: np.ndarray, match_dr: float) -> ak.Array:
    """|PDG id| (E, J) int32 of the hard-process particle matched to each jet (see module docstring)."""
    hard = hard_process_outgoing(flat)
    records = ak.zip({k: flat[k] for k in ("eta", "phi", "pt", "id")})
    candidates = ak.unflatten(records, counts)[ak.unflatten(hard, counts)]
    jet, cand = ak.unzip(ak.cartesian([fat, candidates], axis=1, nested=True))
    near = detector.delta_r(jet.eta, jet.phi, cand.eta, cand.phi) < match_dr
    pt = ak.where(near, cand.pt, -1.0)
    best = ak.argmax(pt, axis=2, keepdims=True)
    pid = ak.fill_none(ak.firsts(abs(cand.id)[best], axis=2), 0)
    found = ak.fill_none(ak.firsts(pt[best], axis=2), -1.0) > 0
    return ak.values_astype(ak.where(found, pid, 0), np.int32)
