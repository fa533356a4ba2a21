import numpy as np

from engine.data import objects
from engine.data.canonical import schema
from tests.events import synthetic_events


def test_pad_events_matches_a_per_event_loop():
    table = schema.events_table(synthetic_events(300, seed=9), "ttbar", ["ttbar"])
    cap = 8
    out = objects.pad_events(table, cap=cap)
    truncated = 0
    for i, ev in enumerate(table.to_pylist()):
        rows = [(objects.ELECTRON, o) for o in ev["electrons"]] + [(objects.MUON, o) for o in ev["muons"]]
        rows += [(objects.BJET if o["btagged"] else objects.JET, o) for o in ev["jets"]]
        truncated += max(len(rows) - (cap - 1), 0)
        rows = rows[:cap - 1] + [(objects.MET, {"pt": ev["met_pt"], "phi": ev["met_phi"]})]
        assert out["counts"][i] == len(rows)
        assert out["types"][i, :len(rows)].tolist() == [code for code, _ in rows]
        assert (out["types"][i, len(rows):] == objects.PAD).all()
        for slot, (_, obj) in enumerate(rows):
            for f, key in enumerate(objects.FEATURES):
                assert out["features"][i, slot, f] == np.float32(obj.get(key, 0.0))
    assert out["truncated"] == truncated > 0
