import awkward as ak
import numpy as np
import pytest

from engine.data.canonical import selection
from engine.errors import InputError
from tests.events import synthetic_events


def test_madrazo2017_object_and_event_cuts():
    events = synthetic_events(2000, seed=5)
    cfg = selection.PRESETS["madrazo2017"]
    out = selection.apply_selection(events, cfg)
    assert 0 < len(out) < len(events)
    n_lep = ak.num(out.electrons) + ak.num(out.muons)
    assert ak.all(n_lep == 1)
    assert ak.all(out.jets.pt > 30) and ak.all(abs(out.jets.eta) < 2.4)
    assert ak.all(out.electrons.pt > 20) and ak.all(out.muons.pt > 20)


def test_mask_matches_a_per_event_count():
    events = synthetic_events(500, seed=6)
    cfg = selection.PRESETS["madrazo2017"]
    mask = selection.event_mask(selection.select_objects(events, cfg), cfg)
    for i, ev in enumerate(events.tolist()):
        leptons = [o for o in ev["electrons"] + ev["muons"] if o["pt"] > 20 and abs(o["eta"]) < 2.4]
        assert mask[i] == (len(leptons) == 1)


def test_none_keeps_everything():
    events = synthetic_events(300, seed=7)
    out = selection.apply_selection(events, selection.PRESETS["none"])
    assert len(out) == len(events)
    assert ak.sum(ak.num(out.jets)) == ak.sum(ak.num(events.jets))


def test_ochoa2023_requires_two_muons_and_a_jet():
    out = selection.apply_selection(synthetic_events(3000, seed=8), selection.PRESETS["ochoa2023"])
    assert len(out) > 0
    assert ak.all(ak.num(out.muons) >= 2) and ak.all(ak.num(out.jets) >= 1)


def test_yaml_selection_and_errors(tmp_path):
    path = tmp_path / "tight.yaml"
    path.write_text("jet_pt_min_gev: 50\nn_jets_min: 2\n")
    cfg = selection.load_selection(str(path))
    assert cfg.jet_pt_min_gev == 50.0 and cfg.n_jets_min == 2 and cfg.name == "tight"
    path.write_text("jet_pt_min: 50\n")
    with pytest.raises(InputError, match="selection.jet_pt_min: unknown key"):
        selection.load_selection(str(path))
    path.write_text("n_jets_min: two\n")
    with pytest.raises(InputError, match="n_jets_min: expected int"):
        selection.load_selection(str(path))
    with pytest.raises(InputError, match="unknown selection"):
        selection.load_selection("tight-ish")


def test_fatjet_mask():
    mask = selection.fatjet_mask(np.array([250.0, 350.0, 400.0]), np.array([0.0, 1.0, 2.5]),
                                 selection.PRESETS["madrazo2017"])
    assert mask.tolist() == [False, True, False]
