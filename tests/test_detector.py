"""Detector response units on synthetic arrays (no Pythia)."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from engine.config import from_dict, load_yaml
from engine.data.generation import detector
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _rate_ok(hits: np.ndarray, p: float) -> bool:
    n = hits.size
    return abs(hits.mean() - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_efficiency_rate_within_statistics():
    rng = np.random.default_rng(1)
    objects = ak.Array([[1.0] * 7] * 3000)
    mask = detector.efficiency_mask(objects, 0.9, rng)
    assert ak.num(mask, axis=1).tolist() == [7] * 3000
    assert _rate_ok(ak.to_numpy(ak.flatten(mask)), 0.9)


def test_smearing_width_and_jet_resolution():
    rng = np.random.default_rng(2)
    factor = detector.smear_factor(np.full(200_000, 0.05), rng)
    assert abs(factor.mean() - 1.0) < 1e-3
    assert abs(factor.std() - 0.05) < 1e-3
    cfg = detector.JetConfig(stochastic=1.0, constant=0.05)
    assert detector.jet_resolution(np.array([100.0]), cfg)[0] == pytest.approx(math.hypot(0.1, 0.05))
    assert (detector.smear_factor(np.full(1000, 5.0), rng) > 0).all()  # floored: momenta stay positive


@pytest.mark.parametrize("flavour,attr", [(5, "b_efficiency"), (4, "c_mistag"), (0, "light_mistag")])
def test_btag_rates_by_flavour(flavour, attr):
    cfg = detector.BTagConfig()
    rng = np.random.default_rng(3)
    btag = detector.btag_discriminant(np.full(100_000, flavour), cfg, rng)
    assert btag.dtype == np.float32 and btag.min() >= 0 and btag.max() <= 1
    assert _rate_ok(btag > cfg.working_point, getattr(cfg, attr))


def test_met_is_minus_visible_sum_without_resolution():
    px = ak.Array([[10.0, -3.0], [0.0, 5.0, 1.0]])
    py = ak.Array([[0.0, 4.0], [-2.0, 0.0, 0.0]])
    met, phi = detector.missing_et(px, py, detector.MetConfig(resolution=0.0), np.random.default_rng(0))
    np.testing.assert_allclose(met, [math.hypot(7, 4), math.hypot(6, 2)])
    np.testing.assert_allclose(phi, [math.atan2(-4, -7), math.atan2(2, -6)])
    smeared, _ = detector.missing_et(px, py, detector.MetConfig(resolution=0.5), np.random.default_rng(0))
    assert not np.allclose(smeared, met)


def test_isolation_counts_neighbours_in_cone_only():
    lep = ak.Array([[{"pt": 50.0, "eta": 0.0, "phi": 3.1, "index": 0}]])
    parts = ak.Array([[{"pt": 50.0, "eta": 0.0, "phi": 3.1, "index": 0},      # itself
                       {"pt": 3.0, "eta": 0.1, "phi": -3.1, "index": 1},      # inside, across phi = pi
                       {"pt": 40.0, "eta": 0.0, "phi": 2.7, "index": 2}]])   # dR = 0.4: outside
    iso = detector.relative_isolation(lep, parts, 0.3)
    assert ak.num(iso, axis=1).tolist() == [1]
    assert ak.to_list(ak.flatten(iso)) == pytest.approx([3.0 / 50.0])


def test_heavy_flavour_and_weak_decays():
    pid = np.array([513, 511, -5122, 553, 421, 443, 211, 541, 4122])
    assert detector.heavy_flavour(pid, 5).tolist() == [1, 1, 1, 0, 0, 0, 0, 1, 0]
    assert detector.heavy_flavour(pid, 4).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 1]
    is_b = np.array([True, True, False])           # B* -> B0 -> pion
    mother = np.array([-1, 0, 1])
    assert detector.weakly_decaying(is_b, mother).tolist() == [False, True, False]


def test_jet_flavour_prefers_b_and_uses_cone():
    jets = ak.Array([[{"eta": 0.0, "phi": 0.0}, {"eta": 1.0, "phi": 2.0}, {"eta": -1.0, "phi": -2.0}]])
    bs = ak.Array([[{"eta": 0.1, "phi": 0.1}]])
    cs = ak.Array([[{"eta": 0.0, "phi": 0.2}, {"eta": 1.2, "phi": 2.1}]])
    assert ak.to_list(detector.jet_flavour(jets, bs, cs, 0.4)) == [[5, 4, 0]]


def test_default_yaml_matches_defaults_and_bad_keys_fail(tmp_path):
    loaded = from_dict(detector.DetectorConfig, load_yaml(ROOT / "configs/detector/default.yaml"), "detector")
    assert asdict(loaded) == asdict(detector.DetectorConfig())
    bad = tmp_path / "bad.yaml"
    bad.write_text("jets:\n  radiu: 0.5\n")
    with pytest.raises(InputError, match="detector.jets.radiu"):
        from_dict(detector.DetectorConfig, load_yaml(bad), "detector")
    bad.write_text("btag:\n  b_efficiency: 1.5\n")
    with pytest.raises(InputError, match="b_efficiency"):
        from_dict(detector.DetectorConfig, load_yaml(bad), "detector")
