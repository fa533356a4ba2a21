"""Jet truth and grooming (engine.data.generation.jets): soft-drop against a pure-Python C/A
declustering, the parton match on hand-built events, and both on real Pythia hbb / QCD jets."""
from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.data.generation import generate as gen
from engine.data.generation import jets
from engine.data.generation.runner import generate
from tests.test_generate import _job


# ---------------------------------------------------------------- reference soft drop

def _four(pt, eta, phi, m=0.0):
    px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
    return (px, py, pz, math.sqrt(px * px + py * py + pz * pz + m * m))


def _rap_phi(p):
    px, py, pz, e = p
    return 0.5 * math.log((e + pz) / (e - pz)), math.atan2(py, px)


def _dr2(a, b):
    (ya, pa), (yb, pb) = _rap_phi(a), _rap_phi(b)
    dphi = (pa - pb + math.pi) % (2 * math.pi) - math.pi
    return (ya - yb) ** 2 + dphi ** 2


def _mass(p):
    px, py, pz, e = p
    return math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))


def _cambridge_aachen(particles):
    """The C/A clustering tree of all particles: nodes (p4, left, right), leaves (p4, None, None)."""
    nodes = [(p, None, None) for p in particles]
    while len(nodes) > 1:
        i, j = min(((i, j) for i in range(len(nodes)) for j in range(i)),
                   key=lambda ij: _dr2(nodes[ij[0]][0], nodes[ij[1]][0]))
        a, b = nodes[i], nodes[j]
        merged = tuple(x + y for x, y in zip(a[0], b[0]))
        nodes = [n for k, n in enumerate(nodes) if k not in (i, j)] + [(merged, a, b)]
    return nodes[0]


def reference_softdrop_mass(particles, z_cut=0.1, beta=0.0, r0=0.8):
    node = _cambridge_aachen(particles)
    while node[1] is not None:
        a, b = node[1], node[2]
        pta, ptb = math.hypot(*a[0][:2]), math.hypot(*b[0][:2])
        if min(pta, ptb) / (pta + ptb) > z_cut * (math.sqrt(_dr2(a[0], b[0])) / r0) ** beta:
            break
        node = a if pta > ptb else b
    return _mass(node[0])


def _jets_array(jet_list):
    return ak.Array([[dict(zip(("px", "py", "pz", "e"), p)) for p in jet] for jet in jet_list])


def test_softdrop_drops_a_soft_wide_angle_particle_and_keeps_a_symmetric_two_prong_jet():
    hard = [_four(200, 0.0, 0.0), _four(150, 0.3, 0.1)]
    with_soft = hard + [_four(5, 0.6, -0.5)]
    two_prong = [_four(150, 0.0, 0.0), _four(150, 0.4, 0.0)]
    single = [_four(300, 0.2, 1.0, 0.1396)]
    got = jets.softdrop_mass(_jets_array([with_soft, two_prong, single, hard]))
    full = [_mass(tuple(map(sum, zip(*j)))) for j in (with_soft, two_prong, single, hard)]
    assert got[0] < full[0] - 1.0                              # the soft particle is groomed away
    assert got[0] == pytest.approx(full[3], rel=1e-9)          # ... leaving the two hard prongs
    assert got[1] == pytest.approx(full[1], rel=1e-9) and got[1] > 55          # m = pt dR
    assert got[2] == pytest.approx(0.1396, rel=1e-6)           # one particle: its own mass
    # an asymmetric pair below z_cut keeps only the harder particle: massless
    lopsided = [_four(300, 0.0, 0.0), _four(20, 0.3, 0.0)]
    assert jets.softdrop_mass(_jets_array([lopsided]))[0] == pytest.approx(0.0, abs=1e-5)


def test_softdrop_matches_the_reference_declustering_on_random_jets():
    rng = np.random.default_rng(3)
    jet_list = []
    for _ in range(12):
        n = int(rng.integers(2, 25))
        pts = rng.exponential(30.0, n) + 0.5
        pts[: rng.integers(1, 3)] *= 8                           # one or two hard prongs
        jet_list.append([_four(pt, eta, phi, m) for pt, eta, phi, m in
                         zip(pts, 1.0 + rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                             rng.choice([0.0, 0.1396, 0.4937], n))])
    got = jets.softdrop_mass(_jets_array(jet_list))
    want = [reference_softdrop_mass(j) for j in jet_list]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)
    full = [_mass(tuple(map(sum, zip(*j)))) for j in jet_list]
    assert np.all(got <= np.array(full) * (1 + 1e-9)) and np.any(got < np.array(full) * 0.99)
    assert len(jets.softdrop_mass(_jets_array([]))) == 0


# ---------------------------------------------------------------- parton match by hand

def _event_flat():
    """Two events: gg -> H g with H -> bb (the b quarks come from a shower copy of the H, status
    -62), and q q -> q q with both outgoing quarks in one direction (a made-up case)."""
    rows = [  # event, id, status, mother (in event), pt, eta, phi
        (0, 21, -21, -1, 0, 0, 0), (0, 21, -21, -1, 0, 0, 0),
        (0, 25, -22, 0, 400, 0.5, 1.0), (0, 21, -23, 0, 400, -0.5, 1.0 - math.pi),
        (0, 25, -62, 2, 410, 0.55, 1.05), (0, 5, -23, 4, 250, 0.6, 1.1), (0, -5, -23, 4, 160, 0.4, 0.9),
        (1, 2, -21, -1, 0, 0, 0), (1, 1, -21, -1, 0, 0, 0),
        (1, 2, -23, 0, 300, 1.0, 0.0), (1, 1, -23, 0, 500, 1.3, 0.2), (1, 21, 51, 2, 50, 1.1, 0.1),
    ]
    event = np.array([r[0] for r in rows])
    counts = np.bincount(event)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    mother = np.array([r[3] for r in rows])
    flat = {"id": np.array([r[1] for r in rows]), "status": np.array([r[2] for r in rows]),
            "mother": np.where(mother >= 0, starts + mother, -1),
            "pt": np.array([r[4] for r in rows], float), "eta": np.array([r[5] for r in rows], float),
            "phi": np.array([r[6] for r in rows], float)}
    return flat, counts


def test_hard_process_outgoing_skips_decay_products_and_shower():
    flat, _ = _event_flat()
    assert np.flatnonzero(jets.hard_process_outgoing(flat)).tolist() == [2, 3, 9, 10]


def test_matched_parton_on_hand_built_events():
    flat, counts = _event_flat()
    fat = ak.Array([[{"eta": 0.52, "phi": 1.02}, {"eta": -0.5, "phi": 1.0 - math.pi}, {"eta": 2.0, "phi": -2.0}],
                    [{"eta": 1.1, "phi": 0.1}, {"eta": 1.9, "phi": 0.1}]])
    got = jets.matched_parton(fat, flat, counts, 0.8).tolist()
    # the H (not its b quarks); the recoiling gluon; nothing; the harder of two quarks in the cone;
    # only the id-1 quark within 0.8 (dR 0.61; the id-2 quark lies at 0.91)
    assert got == [[25, 21, 0], [1, 1]]
    assert jets.matched_parton(fat, flat, counts, 0.05).tolist() == [[25, 21, 0], [0, 0]]
    assert ak.to_numpy(ak.flatten(jets.matched_parton(fat, flat, counts, 0.8))).dtype == np.int32


# ---------------------------------------------------------------- real Pythia jets

@pytest.fixture(scope="module")
def pythia_jets(tmp_path_factory):
    out = tmp_path_factory.mktemp("jets")
    return {p: pq.read_table(generate(_job(p, 30, ecm=13000.0), out, progress=False)["path"])
            for p in ("hbb", "qcd")}


def test_pythia_jets_carry_softdrop_mass_and_parton(pythia_jets):
    fields = {}
    for process, table in pythia_jets.items():
        fat = table.column("fatjet").combine_chunks()
        fields[process] = {k: fat.field(k).to_numpy() for k in ("mass", "msoftdrop", "parton")}
        f = fields[process]
        assert np.all(np.isfinite(f["msoftdrop"])) and np.all(f["msoftdrop"] >= 0)
        assert np.all(f["msoftdrop"] <= f["mass"] * (1 + 1e-5) + 1e-3)
        assert np.any(f["msoftdrop"] < 0.9 * f["mass"])          # grooming removes something
        assert f["parton"].dtype == np.int32
    hbb, qcd = fields["hbb"], fields["qcd"]
    assert np.mean(hbb["parton"] == 25) >= 0.9
    assert set(qcd["parton"].tolist()) <= {0, 1, 2, 3, 4, 5, 21} and np.mean(qcd["parton"] > 0) >= 0.8
    assert 90 < np.median(hbb["msoftdrop"]) < 140                # groomed Higgs jets peak near mH
    assert np.median(qcd["msoftdrop"]) < 0.5 * np.median(hbb["msoftdrop"])


def test_the_new_fields_change_nothing_else(pythia_jets, tmp_path, monkeypatch):
    """With the grooming and the match replaced by constants, every other column is the same:
    they draw no random numbers and touch neither the jets nor their constituents."""
    monkeypatch.setattr(gen, "softdrop_mass", lambda c: np.zeros(len(c)))
    monkeypatch.setattr(gen, "matched_parton", lambda fat, *a: ak.values_astype(ak.zeros_like(fat.pt), np.int32))
    plain = pq.read_table(generate(_job("qcd", 30, ecm=13000.0), tmp_path, progress=False)["path"])
    real = pythia_jets["qcd"]
    for name in real.column_names:
        if name != "fatjet":
            assert real.column(name).equals(plain.column(name)), name
    a, b = real.column("fatjet").combine_chunks(), plain.column("fatjet").combine_chunks()
    for key in ("pt", "eta", "phi", "mass"):
        assert a.field(key).equals(b.field(key)), key
    assert not a.field("msoftdrop").equals(b.field("msoftdrop"))


def test_fat_jet_parts_record_the_grooming_so_parts_without_it_are_not_reused():
    assert _job("hbb", 5, ecm=13000.0).settings()["softdrop"] == {"beta": 0.0, "z_cut": 0.1, "r0": 0.8}
    assert "softdrop" not in _job("ttbar", 5).settings()              # event parts: unchanged settings
