"""Soft-drop mass windows and the mass-sculpting check (engine.jet_metrics), on synthetic scores,
and `engine evaluate` on a small model trained on fat-jet shards."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import jet_metrics as jm
from engine.__main__ import main
from engine.training.config import load_config
from engine.training.metrics import roc_auc
from tests.events import reset_accelerate


def _scores(signal_score: np.ndarray) -> np.ndarray:
    return np.stack([1 - signal_score, signal_score], axis=1)


def _sample(n: int, seed: int, sculpt: bool):
    """Signal peaked at 125 GeV, background falling; the score ignores the mass, or is the mass."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([1, 0], n)
    mass = np.concatenate([rng.normal(125, 10, n), rng.exponential(60, n)])
    if sculpt:
        score = 1 / (1 + np.exp(-(mass - 100) / 10))
    else:
        score = np.where(labels == 1, rng.beta(4, 2, 2 * n), rng.beta(2, 4, 2 * n))
    return _scores(score), labels, mass


def test_jensen_shannon_limits():
    p = np.array([1.0, 2.0, 3.0, 0.0])
    assert jm.jensen_shannon(p, 5 * p) == 0.0
    assert jm.jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert 0 < jm.jensen_shannon(p, p[::-1]) < 1
    assert math.isnan(jm.jensen_shannon(p, np.zeros(4)))


def test_a_cut_that_keeps_the_whole_background_leaves_the_jsd_undefined():
    """Every background jet scores above every signal jet: no background jet fails the cut."""
    rng = np.random.default_rng(1)
    labels = np.repeat([1, 0], 200)
    score = np.where(labels == 1, rng.uniform(0, 0.5, 400), rng.uniform(0.6, 1, 400))
    res = jm.mass_sculpting(_scores(score), labels, rng.exponential(60, 400), signal=1)
    assert res["background_passing"] == res["background_events"] == 200
    assert math.isnan(res["jsd"]) and math.isnan(res["inverse_jsd"])
    assert res["signal_passing"] == pytest.approx(0.5, abs=0.01)


def test_a_mass_blind_tagger_barely_sculpts_and_a_mass_tagger_sculpts_hard():
    blind = jm.mass_sculpting(*_sample(40_000, 2, sculpt=False), signal=1)   # JSD noise ~ bins / N
    mass = jm.mass_sculpting(*_sample(4000, 2, sculpt=True), signal=1)
    assert blind["jsd"] < 0.01 and blind["inverse_jsd"] > 100
    assert mass["jsd"] > 0.3 and mass["inverse_jsd"] < 4
    assert blind["signal_passing"] == pytest.approx(0.5, abs=0.001)


def test_mass_windows_split_the_jets_and_repeat_the_figures():
    scores, labels, mass = _sample(3000, 4, sculpt=False)
    windows = jm.mass_windows(scores, labels, mass, signal=1)
    assert list(windows) == ["0-50", "50-90", "90-140", "140+"]
    assert sum(w["events"] for w in windows.values()) == np.sum(mass >= 0)
    assert sum(w["signal_events"] for w in windows.values()) == np.sum((labels == 1) & (mass >= 0))
    higgs = windows["90-140"]
    inside = (mass >= 90) & (mass < 140)
    assert higgs["roc_auc"] == roc_auc(labels[inside] == 1, scores[inside, 1])
    assert higgs["signal_passing_inclusive_cut"] == pytest.approx(0.5, abs=0.05)   # mass-blind
    assert set(higgs["background_rejection_at_signal_efficiency"]) == {"0.3", "0.5", "0.7"}
    perfect = jm.mass_windows(_scores((labels == 1).astype(float)), labels, mass, 1, edges=(0, 90, math.inf))
    assert all(w["roc_auc"] == 1.0 for w in perfect.values() if w["signal_events"] and w["background_events"])


def test_jets_without_softdrop_mass_are_left_out_and_counted():
    scores, labels, mass = _sample(100, 5, sculpt=False)
    mass[:30] = np.nan
    res = jm.jet_mass_metrics(scores, labels, mass, 1, edges=(0, 100, math.inf))
    assert res["events_without_msoftdrop"] == 30 and res["mass_window_edges_gev"] == [0, 100, "inf"]
    assert sum(w["events"] for w in res["mass_windows"].values()) == 170
    none = jm.jet_mass_metrics(scores, labels, np.full(200, np.nan), 1)
    assert none["events_without_msoftdrop"] == 200 and "mass_windows" not in none


@pytest.mark.parametrize("text,ok", [("0,50,90,140,inf", True), ("90,140", True), ("50", False),
                                     ("50,40", False), ("a,b", False), ("0,nan", False), ("0,50,50", False)])
def test_parse_windows(text, ok):
    if ok:
        assert jm.parse_windows(text)[0] == float(text.split(",")[0])
    else:
        with pytest.raises(ValueError):
            jm.parse_windows(text)


def _look_alike_shards(folder, n: int):
    """Fat-jet shards of two classes drawn alike (synthetic QCD jets of two seeds), so that a
    tagger cannot separate them and the cut at eps_S = 0.5 keeps about half the background."""
    from engine.data.canonical import parquet_io, schema
    from engine.data.generation.synthetic import synthetic_fatjets
    from engine.data.shards import ShardOptions, write_shards
    for seed, name in enumerate(("qcd", "top")):
        table = schema.fatjets_table(synthetic_fatjets("qcd", n, seed), name, ["qcd", "top"])
        parquet_io.write_table(folder / "in" / f"{name}.parquet", table, "fatjets", ["qcd", "top"], {})
    write_shards([folder / "in"], folder / "shards", ShardOptions(seed=1))
    return folder / "shards"


@pytest.mark.slow
def test_evaluate_on_fat_jets_reports_mass_windows_and_sculpting(tmp_path, capsys):
    from engine.train import train
    shards = _look_alike_shards(tmp_path, 150)
    train(load_config(None, [f"data.shards={shards}", f"output_dir={tmp_path / 'run'}", "model.name=deepsets",
                             "model.options={inputs: constituents}", "train.batch_size=64", "data.signal=top",
                             "train.epochs=1"]))
    reset_accelerate()
    code = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--shards", str(tmp_path / "shards"),
                 "--out", str(tmp_path / "eval"), "--mass-windows", "0,60,120,inf"])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["mass_windows"]) == ["0-60", "60-120", "120+"]
    assert sum(w["events"] for w in metrics["mass_windows"].values()) == metrics["events"]
    sculpt = metrics["mass_sculpting"]
    assert sculpt["background_events"] == metrics["background_events"] and sculpt["background_passing"] > 0
    assert 0 < sculpt["jsd"] < 1 and sculpt["inverse_jsd"] == pytest.approx(1 / sculpt["jsd"])
    assert sculpt["signal_passing"] >= 0.5
    assert "msoftdrop 60-120 GeV:" in out and "mass sculpting: msoftdrop JSD of the background passing / failing" in out
    assert (tmp_path / "eval" / "msoftdrop.png").stat().st_size > 5000 and "msoftdrop.png" in out
    code = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--shards", str(tmp_path / "shards"),
                 "--out", str(tmp_path / "bad"), "--mass-windows", "90,50"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --mass-windows: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
