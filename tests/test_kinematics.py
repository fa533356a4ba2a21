"""Mass variables from padded objects: dilepton mass, lepton-MET transverse mass, and the choice."""
import numpy as np
import pytest

from engine.data import kinematics, objects
from engine.data.objects import ELECTRON, JET, MET, MUON


def _event(*objs):
    """Padded (1, 6) types and (1, 6, 6) features from (type, pt, eta, phi, mass) tuples."""
    types = np.zeros((1, 6), np.int8)
    feats = np.zeros((1, 6, 6), np.float32)
    for k, (t, pt, eta, phi, m) in enumerate(objs):
        types[0, k] = t
        feats[0, k, :4] = [pt, eta, phi, m]
    return types, feats


def test_dilepton_mass_takes_the_two_leading_leptons_of_any_flavour():
    # electrons come before muons in the layout: the leading pair here is (muon 45, electron 45), not the 10 GeV e
    t, f = _event((ELECTRON, 45.0, 0.0, 0.0, 0.000511), (ELECTRON, 10.0, 1.0, 1.0, 0.000511),
                  (MUON, 45.0, 0.0, np.pi, 0.10566), (JET, 80.0, 0.5, 2.0, 5.0), (MET, 20.0, 0.0, 1.0, 0.0))
    assert kinematics.dilepton_mass(t, f)[0] == pytest.approx(90.0, rel=1e-4)
    one = _event((MUON, 45.0, 0.0, 0.0, 0.1), (JET, 45.0, 0.0, np.pi, 0.0), (MET, 30.0, 0.0, 0.0, 0.0))
    assert np.isnan(kinematics.dilepton_mass(*one)[0])


def test_transverse_mass_of_a_lepton_and_the_met():
    t, f = _event((MUON, 40.0, 1.2, 0.3, 0.1), (MET, 40.0, 0.0, 0.3 + np.pi, 0.0))
    assert kinematics.transverse_mass(t, f)[0] == pytest.approx(80.0, rel=1e-5)     # back to back: 2 sqrt(pt MET)
    t, f = _event((ELECTRON, 30.0, 0.0, 0.0, 0.0), (MET, 50.0, 0.0, np.pi / 2, 0.0))
    assert kinematics.transverse_mass(t, f)[0] == pytest.approx(np.sqrt(2 * 30 * 50), rel=1e-5)
    t, f = _event((JET, 30.0, 0.0, 0.0, 0.0), (MET, 50.0, 0.0, 1.0, 0.0))
    assert np.isnan(kinematics.transverse_mass(t, f)[0])


def test_the_variable_follows_the_selection():
    assert kinematics.mass_variable(np.array([1, 1, 1, 2])) == "transverse_mass"     # one-lepton selection
    assert kinematics.mass_variable(np.array([2, 2, 3, 1])) == "dilepton_mass"       # Z -> ll selection
    assert kinematics.mass_variable(np.array([], int)) == "transverse_mass"
    t = np.array([[ELECTRON, MUON, MET, 0], [JET, MET, 0, 0]], np.int8)
    assert kinematics.lepton_counts(t).tolist() == [2, 0]
    assert set(kinematics.VARIABLES) == {"dilepton_mass", "transverse_mass"}
    feats = np.zeros((2, 4, len(objects.FEATURES)), np.float32)
    assert kinematics.compute("transverse_mass", t, feats).shape == (2,)
