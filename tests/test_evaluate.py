"""evaluate / predict on a trained model and the gradient-boosted-tree baseline."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.__main__ import main
from engine.evaluate import _mass_plot, evaluate, predict
from engine.training.config import load_config
from tests.events import reset_accelerate, synthetic_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    synthetic_shards(folder, 200, seed=1, events_per_member=128)
    from engine.train import train
    from engine.training.gbt import train_gbt
    base = [f"data.shards={folder / 'shards'}", "data.signal=ttbar", "train.batch_size=64"]
    train(load_config(None, base + [f"output_dir={folder / 'deepsets'}", "model.name=deepsets",
                                     "train.epochs=3", "train.lr=0.003"]))
    reset_accelerate()
    train(load_config(None, base + [f"output_dir={folder / 'small_cnn'}", "model.name=small_cnn",
                                     "render.size_px=32", "render.dtype=bfloat16", "train.mixed_precision=bf16"]))
    reset_accelerate()
    train_gbt(load_config(None, base + [f"output_dir={folder / 'gbt'}", "model.name=gbt",
                                         "model.options={max_iter: 50}"]))
    return folder


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("model", ["deepsets", "gbt"])
def test_evaluate_writes_metrics_and_plots(trained, tmp_path, model):
    metrics = evaluate(trained / model, trained / "shards", tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] > 0.5
    cm = np.array(saved["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == saved["events"]
    assert np.trace(cm) / cm.sum() == pytest.approx(saved["accuracy"])
    assert set(saved["roc_auc_one_vs_rest"]) == {"dy", "ttbar", "wjets"} and saved["signal"] == "ttbar"
    rejection = saved["background_rejection_at_signal_efficiency"]
    assert list(rejection) == ["0.3", "0.5", "0.7"]
    assert all(r is None or r >= 1 for r in rejection.values())
    finite = [r for r in rejection.values() if r is not None]
    assert finite == sorted(finite, reverse=True)        # a looser cut lets more background in
    expected = ["metrics.json", "confusion.png", "roc.png", "scores.png"] + (["training.png"] if model != "gbt" else [])
    assert metrics["written"] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)   # nothing else, no temporaries
    for name in expected[1:]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_message_lists_only_the_files_written(trained, tmp_path, capsys):
    code, out, _ = _cli(capsys, "evaluate", "--checkpoint", trained / "gbt", "--shards", trained / "shards",
                        "--out", tmp_path)
    assert code == 0 and "training.png" not in out and "metrics.json, confusion.png, roc.png, scores.png" in out
    assert "background rejection" in out


def test_a_split_folder_is_its_own_split(trained, tmp_path, capsys):
    root = evaluate(trained / "gbt", trained / "shards", tmp_path / "root", split="val")
    folder = evaluate(trained / "gbt", trained / "shards" / "val", tmp_path / "folder")
    assert folder["split"] == "val" and folder["confusion_matrix"] == root["confusion_matrix"]
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", trained / "gbt", "--shards", trained / "shards" / "val",
                        "--split", "test", "--out", tmp_path / "clash")
    assert code == 2 and "is the 'val' split, not 'test'" in err
    assert not (tmp_path / "clash").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_parquet_given_as_shards_says_to_shard_first(trained, tmp_path, capsys, command):
    code, _, err = _cli(capsys, command, "--checkpoint", trained / "gbt", "--shards", trained / "parquet",
                        "--out", tmp_path / "out")
    assert code == 2 and "run `python -m engine shard" in err and str(trained / "parquet") in err
    code, _, err = _cli(capsys, command, "--checkpoint", trained / "gbt", "--shards", tmp_path / "nothing",
                        "--out", tmp_path / "out")
    assert code == 2 and "no such shard folder" in err
    assert not (tmp_path / "out").exists()


def _broken_copy(trained: Path, tmp_path: Path, model: str, file: str, content: bytes | None) -> Path:
    run = tmp_path / model
    shutil.copytree(trained / model, run)
    if content is None:
        (run / file).unlink()
    else:
        (run / file).write_bytes(content)
    return run


@pytest.mark.parametrize("model, file, content, problem", [
    ("gbt", "run.json", b'{"class_names": ["dy", "tt', "not JSON"),
    ("gbt", "run.json", b'{"dataset_kind": "events"}', "class_names"),
    ("gbt", "config.yaml", b"model: [name: gbt\n", "not valid YAML"),
    ("gbt", "config.yaml", b"model:\n  nmae: gbt\n", "model.nmae: unknown key"),
    ("gbt", "gbt.pkl", b"\x80\x04garbage", "unreadable"),
    ("gbt", "gbt.pkl", None, "missing"),
    ("deepsets", "model.safetensors", None, "missing"),
    ("deepsets", "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage", "cannot read weights"),
])
def test_a_broken_training_output_is_one_line_naming_the_file(trained, tmp_path, capsys, model, file,
                                                               content, problem):
    run = _broken_copy(trained, tmp_path, model, file, content)
    for command in ("evaluate", "predict"):
        code, _, err = _cli(capsys, command, "--checkpoint", run, "--shards", trained / "shards",
                            "--out", tmp_path / "out")
        assert code == 2 and err.startswith(f"error: {run / file}: ") and problem in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_broken_training_output_in_a_subprocess_has_no_traceback(trained, tmp_path):
    run = _broken_copy(trained, tmp_path, "gbt", "run.json", b"[1, 2")
    res = subprocess.run([sys.executable, "-m", "engine", "predict", "--checkpoint", str(run),
                          "--shards", str(trained / "shards"), "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr == f"error: {run / 'run.json'}: unreadable (JSONDecodeError: not JSON)\n"


def test_a_cnn_trained_on_bfloat16_images_evaluates_as_in_its_run(trained, tmp_path):
    """bf16 images (as in the studies' configs) into float32 weights under the run's autocast: the
    validation split scores as the run's own last validation did."""
    metrics = evaluate(trained / "small_cnn", trained / "shards", tmp_path, split="val")
    val = json.loads((trained / "small_cnn" / "run.json").read_text())["val"]
    assert metrics["events"] == val["events"]
    assert metrics["accuracy"] == pytest.approx(val["accuracy"], abs=1.01 / val["events"])


def _parquet_rows(folder: Path) -> dict:
    """(process, run, lumi, event) -> met_pt of every input event."""
    rows = {}
    for file in sorted((folder / "parquet").glob("*.parquet")):
        t = pq.read_table(file, columns=["process", "run", "lumi", "event", "met_pt"]).to_pydict()
        rows.update({(p, r, lu, e): m for p, r, lu, e, m in zip(t["process"], t["run"], t["lumi"], t["event"],
                                                                t["met_pt"])})
    return rows


def test_predict_writes_scores_and_event_identity_in_split_order(trained, tmp_path, capsys):
    files = predict(trained / "deepsets", trained / "shards", tmp_path)
    assert "warning" not in capsys.readouterr().err
    table = pq.read_table(files[0])
    names = ("dy", "ttbar", "wjets")
    scores = np.stack([table.column(f"score_{c}").to_numpy() for c in names], 1)
    assert np.allclose(scores.sum(1), 1, atol=1e-5)
    assert (table.column("predicted").to_numpy() == scores.argmax(1)).all()
    assert sorted(table.column("index").to_pylist()) == list(range(table.num_rows))
    # every prediction joins back to exactly one input event of its class
    keys = list(zip([names[i] for i in table.column("label").to_pylist()], table.column("run").to_pylist(),
                    table.column("lumi").to_pylist(), table.column("event").to_pylist()))
    assert len(set(keys)) == len(keys) and set(keys) <= set(_parquet_rows(trained))
    meta = json.loads(table.schema.metadata[b"engine"])
    assert "visible cross-section" in meta["weight"]
    assert b"visible cross-section" in table.schema.field("weight").metadata[b"description"]
    variable = meta["mass_variable"]
    assert variable in table.column_names and [f.name for f in files] == ["predictions.parquet", f"{variable}.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.parquet", f"{variable}.png"]
    weights = table.column("weight").to_numpy()
    for label in range(3):
        assert weights[table.column("label").to_numpy() == label].sum() == pytest.approx(1.0, rel=1e-4)


def test_predict_identity_matches_the_events_the_loader_delivers(trained):
    """The sidecar's (run, lumi, event) at a batch's `index` is the event in that batch (checked on MET)."""
    from engine.data import objects
    from engine.data.loader import LoaderConfig, make_loader
    from engine.data.shards import read_identity
    ids, rows = read_identity(trained / "shards", "test"), _parquet_rows(trained)
    names = json.loads((trained / "shards" / "manifest.json").read_text())["class_names"]
    loader = make_loader(trained / "shards", LoaderConfig(batch_size=97, shuffle=True, seed=3), split="test")
    for batch in loader:
        types, feats = batch["types"].numpy(), batch["features"].numpy()
        met = feats[types == objects.MET][:, objects.F_PT]
        for k, i in enumerate(batch["index"].numpy()):
            key = (names[int(batch["labels"][k])], ids["run"][i], ids["lumi"][i], ids["event"][i])
            assert met[k] == pytest.approx(rows[key], rel=2e-3)


def test_shards_without_identity_predict_with_one_warning(trained, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(trained / "shards", old)
    manifest = json.loads((old / "manifest.json").read_text())
    for split in manifest["splits"].values():
        del split["identity"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for split in ("train", "val", "test"):
        (old / split / "identity.parquet").unlink()
    code, out, err = _cli(capsys, "predict", "--checkpoint", trained / "gbt", "--shards", old / "test",
                          "--out", tmp_path / "out")
    assert code == 0 and err.count("warning") == 1 and "carry no event identity" in err
    table = pq.read_table(tmp_path / "out" / "predictions.parquet")
    assert "run" not in table.column_names and table.num_rows == manifest["splits"]["test"]["events"]


def test_a_corrupt_identity_sidecar_is_a_clear_error(trained, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(trained / "shards", bad)
    (bad / "test" / "identity.parquet").write_bytes(b"PAR1 not really")
    code, _, err = _cli(capsys, "predict", "--checkpoint", trained / "gbt", "--shards", bad, "--out", tmp_path / "o")
    assert code == 2 and f"{bad / 'test' / 'identity.parquet'}: unreadable event identity" in err


def test_an_empty_mass_plot_warns(tmp_path, capsys):
    mass = np.full(5, np.nan)
    path = _mass_plot(mass, np.zeros(5, int), np.ones(5), ["a", "b"], "dilepton_mass", tmp_path, "t")
    assert path.is_file() and "no event has a dilepton mass" in capsys.readouterr().err
    _mass_plot(np.arange(5.0), np.zeros(5, int), np.ones(5), ["a", "b"], "dilepton_mass", tmp_path, "t")
    assert capsys.readouterr().err == ""


def test_evaluate_on_other_classes_is_a_clear_error(trained, tmp_path):
    synthetic_shards(tmp_path, 50, seed=2, kind="fatjets")
    res = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--checkpoint", str(trained / "deepsets"),
                          "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "was trained on events" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_an_evaluation_that_fails_midway_leaves_no_metrics_and_no_temporaries(trained, tmp_path, monkeypatch):
    """metrics.json is written last, so its presence (which `sweep` relies on) means complete."""
    from engine.training import plots

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(plots, "score_distributions", broken)
    with pytest.raises(RuntimeError):
        evaluate(trained / "gbt", trained / "shards", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "roc.png"]


def test_a_killed_predict_leaves_no_partial_file(trained, tmp_path):
    """SIGKILL at any moment: predictions.parquet is either absent or whole, never a temporary."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "engine", "predict", "--checkpoint", str(trained / "deepsets"),
                             "--shards", str(trained / "shards"), "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.01)                    # the first file (the plot, or its temporary) appears
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for path in tmp_path.iterdir():
        if path.name == "predictions.parquet":
            assert pq.read_table(path).num_rows > 0
        else:
            assert path.suffix == ".png" or ".tmp-" in path.name
    res = subprocess.run([sys.executable, "-m", "engine", "predict", "--checkpoint", str(trained / "deepsets"),
                          "--shards", str(trained / "shards"), "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and pq.read_table(tmp_path / "predictions.parquet").num_rows > 0


def test_predict_on_jets_plots_the_large_r_jet_mass(tmp_path):
    from engine.train import train
    synthetic_shards(tmp_path, 40, seed=3, kind="fatjets")
    train(load_config(None, [f"data.shards={tmp_path / 'shards'}", f"output_dir={tmp_path / 'run'}",
                             "model.name=deepsets", "model.options={inputs: constituents}", "train.batch_size=32"]))
    reset_accelerate()
    files = predict(tmp_path / "run", tmp_path / "shards" / "test", tmp_path / "out")
    table = pq.read_table(files[0])
    assert [f.name for f in files] == ["predictions.parquet", "fatjet_mass.png"]
    mass = table.column("fatjet_mass").to_numpy()
    assert np.isfinite(mass).all() and (mass > 0).all() and {"run", "lumi", "event"} <= set(table.column_names)
    msoftdrop, parton = table.column("msoftdrop").to_numpy(), table.column("parton").to_numpy()
    assert (msoftdrop <= mass).all() and (msoftdrop > 0).all() and parton.dtype == np.int32
    assert set(parton[table.column("label").to_numpy() == 1].tolist()) == {6}          # synthetic top
