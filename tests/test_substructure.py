"""Tests for engine.data.substructure: N-subjettiness, D2 and the jet features of gbt on fat jets,
against a per-jet brute-force reference (a naive exclusive-kt clustering and explicit pair and
triplet sums) and on hand-built jets."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engine.data import substructure
from engine.data.substructure import JET_FEATURES, jet_features, n_subjettiness, real_constituents

COLUMN = {name: i for i, name in enumerate(JET_FEATURES)}


def padded(jets: list[np.ndarray], cap: int, fill: float = 0.0, axis=None) -> tuple[np.ndarray, ...]:
    """Per-jet (n, 3) pt, eta, phi arrays -> constituents (B, cap, 5), counts, fatjet (B, 4)."""
    constituents = np.full((len(jets), cap, 5), fill)
    counts = np.array([len(j) for j in jets])
    for b, jet in enumerate(jets):
        constituents[b, :len(jet), :3] = jet
        constituents[b, :len(jet), 3:] = (1.0, 211.0)
    fatjet = np.array([[j[:, 0].sum() * 1.01, 0.1, 0.0, 80.0] for j in jets]) if axis is None else axis
    return constituents, counts, fatjet


def random_jets(rng, n_jets: int, low: int = 1, high: int = 18, centre_phi: float = 0.0) -> list[np.ndarray]:
    jets = []
    for _ in range(n_jets):
        n = int(rng.integers(low, high + 1))
        phi = substructure.wrap_phi(centre_phi + rng.normal(0, 0.3, n))
        jets.append(np.column_stack([rng.exponential(20.0, n) + 1.0, rng.normal(0.2, 0.3, n), phi]))
    return jets


# ----------------------------------------------------------------------------- the reference

def four_vector(pt, eta, phi):
    return np.array([pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta), pt * math.cosh(eta)])


def rap_phi(p):
    return 0.5 * math.log((p[3] + p[2]) / (p[3] - p[2])), math.atan2(p[1], p[0])


def delta_r(a, b):
    dphi = (a[1] - b[1] + math.pi) % (2 * math.pi) - math.pi
    return math.hypot(a[0] - b[0], dphi)


def naive_exclusive_kt(jet: np.ndarray, n: int, radius: float = 1000.0) -> list[tuple[float, float]]:
    """kt clustering step by step (the smallest of d_ij = min(kt_i^2, kt_j^2) dR_ij^2 / R^2 and
    d_iB = kt_i^2; a beam merge removes the pseudojet) until n pseudojets remain."""
    alive = [four_vector(*c) for c in jet]
    while len(alive) > n:
        kt2 = [p[0] ** 2 + p[1] ** 2 for p in alive]
        best = min((kt2[i], i, None) for i in range(len(alive)))
        for i, j in itertools.combinations(range(len(alive)), 2):
            d = min(kt2[i], kt2[j]) * delta_r(rap_phi(alive[i]), rap_phi(alive[j])) ** 2 / radius ** 2
            best = min(best, (d, i, j))
        _, i, j = best
        if j is None:
            alive.pop(i)
        else:
            alive[i] = alive[i] + alive[j]
            alive.pop(j)
    return [rap_phi(p) for p in alive]


def reference_tau(jet: np.ndarray, n: int) -> float:
    if len(jet) <= n:
        return 0.0
    axes = naive_exclusive_kt(jet, n)
    total = sum(pt * min(delta_r((eta, phi), a) for a in axes) for pt, eta, phi in jet)
    return total / (0.8 * jet[:, 0].sum())


def reference_d2(jet: np.ndarray) -> float:
    z = jet[:, 0] / jet[:, 0].sum()
    r = [[delta_r(a[1:], b[1:]) for b in jet] for a in jet]
    e2 = sum(z[i] * z[j] * r[i][j] for i, j in itertools.combinations(range(len(jet)), 2))
    e3 = sum(z[i] * z[j] * z[k] * r[i][j] * r[i][k] * r[j][k]
             for i, j, k in itertools.combinations(range(len(jet)), 3))
    return e3 / e2 ** 3 if e2 > 0 else 0.0


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


# ----------------------------------------------------------------------------- the tests

def test_tau_and_d2_match_a_brute_force_reference_on_random_jets(monkeypatch):
    monkeypatch.setattr(substructure, "CHUNK_JETS", 7)       # several chunks, each cut to its own count
    rng = np.random.default_rng(3)
    jets = random_jets(rng, 40)
    features = jet_features(*padded(jets, cap=24))
    for b, jet in enumerate(jets):
        taus = [reference_tau(jet, n) for n in (1, 2, 3)]
        expected = [ratio(taus[1], taus[0]), ratio(taus[2], taus[1]), reference_d2(jet)]
        got = features[b, [COLUMN["tau21"], COLUMN["tau32"], COLUMN["d2"]]]
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-7, err_msg=f"jet {b}: {len(jet)} constituents")


def test_tau_n_itself_matches_the_reference():
    rng = np.random.default_rng(4)
    jets = random_jets(rng, 15, low=4)
    pt, eta, phi, mask = real_constituents(*padded(jets, cap=20)[:2])
    for n in (1, 2, 3):
        np.testing.assert_allclose(n_subjettiness(pt, eta, phi, mask, n), [reference_tau(j, n) for j in jets],
                                   rtol=1e-9, atol=1e-12)


def test_hand_built_jets_have_their_exact_values():
    two = np.array([[50.0, 0.3, 0.0], [50.0, -0.3, 0.0]])              # symmetric: the tau1 axis at y = 0
    one = np.array([[120.0, 0.1, 0.2]])
    d = 0.2                                                              # equal pts on an equilateral triangle
    triangle = np.array([[30.0, 0.0, 0.0], [30.0, d, 0.0], [30.0, d / 2, d * math.sqrt(3) / 2]])
    constituents, counts, fatjet = padded([two, one, triangle], cap=5)
    f = jet_features(constituents, counts, fatjet)
    pt, eta, phi, mask = real_constituents(constituents, counts)
    np.testing.assert_allclose(n_subjettiness(pt, eta, phi, mask, 1)[:2], [0.3 / 0.8, 0.0], rtol=1e-12)
    assert f[0, COLUMN["tau21"]] == 0 and f[0, COLUMN["tau32"]] == 0      # 2 particles: tau2 = 0
    np.testing.assert_allclose(f[0, COLUMN["d2"]], 0.0)                  # no triplet: e3 = 0
    assert list(f[1, [COLUMN["tau21"], COLUMN["tau32"], COLUMN["d2"]]]) == [0, 0, 0]   # one particle
    assert f[1, COLUMN["n_constituents"]] == 1
    np.testing.assert_allclose(f[1, COLUMN["pt_fraction_1"]], 120.0 / fatjet[1, 0], rtol=1e-6)
    assert list(f[1, [COLUMN["pt_fraction_2"], COLUMN["pt_fraction_3"], COLUMN["pt_fraction_4"]]]) == [0, 0, 0]
    np.testing.assert_allclose(f[2, COLUMN["d2"]], 1.0, rtol=1e-5)       # e2 = d/3, e3 = d^3/27
    np.testing.assert_allclose(f[:, :3], fatjet[:, [0, 1, 3]], rtol=1e-6)


def test_a_jet_across_the_phi_wrap_has_the_values_of_the_same_jet_away_from_it():
    rng = np.random.default_rng(5)
    jets = random_jets(rng, 12, low=2, centre_phi=0.0)
    shifted = [np.column_stack([j[:, :2], substructure.wrap_phi(j[:, 2] + math.pi)]) for j in jets]
    assert sum(np.ptp(j[:, 2]) > math.pi for j in shifted) >= 6        # most straddle +-pi
    here, there = padded(jets, cap=20), padded(shifted, cap=20)
    there[2][:, 2] = -math.pi + 1e-3
    np.testing.assert_allclose(jet_features(*there), jet_features(*here), rtol=1e-5, atol=1e-7)


def test_features_are_invariant_under_permutations_of_the_constituents():
    rng = np.random.default_rng(6)
    jets = random_jets(rng, 20, low=1, high=25)
    shuffled = [j[rng.permutation(len(j))] for j in jets]
    np.testing.assert_allclose(jet_features(*padded(shuffled, cap=30)), jet_features(*padded(jets, cap=30)),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -7.0])
def test_padded_slots_change_nothing(fill):
    rng = np.random.default_rng(7)
    jets = random_jets(rng, 20, low=1, high=12)
    clean = jet_features(*padded(jets, cap=12))
    np.testing.assert_array_equal(jet_features(*padded(jets, cap=12, fill=fill)), clean)
    np.testing.assert_allclose(jet_features(*padded(jets, cap=40, fill=fill)), clean, rtol=1e-6)


def test_jets_without_constituents_and_float32_inputs_give_finite_features():
    rng = np.random.default_rng(8)
    constituents, counts, fatjet = padded(random_jets(rng, 6), cap=20)
    counts[[0, 3]] = 0
    f = jet_features(constituents.astype(np.float32), counts.astype(np.int32), fatjet.astype(np.float32))
    assert f.dtype == np.float32 and f.shape == (6, len(JET_FEATURES)) and np.isfinite(f).all()
    assert (f[[0, 3], 3:] == 0).all()
