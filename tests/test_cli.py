"""The command line as a newcomer meets it: `python -m engine ...` help, aliases, pipes, the models'
names, the demo's resume and refusals, and the contact sheet."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.__main__ import COMMANDS, DefaultsFormatter, build_parser, main
from engine.data.canonical import parquet_io, schema
from engine.data.generation import synthetic
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _engine(*argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


def test_train_is_an_alias_of_engine_train(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert f"error: {tmp_path / 'missing.yaml'}: no such config file" in capsys.readouterr().err
    res = _engine("train", "--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m engine.train") and "--config" in res.stdout
    listed = _engine("--help")
    assert listed.returncode == 0 and "  train " in listed.stdout and "engine.train" in listed.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "train"])
def test_help_shows_every_default(command):
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    formatter = DefaultsFormatter(prog="x")
    for action in sub._actions:
        if action.default not in (None, "==SUPPRESS==") and action.option_strings:
            assert "default" in formatter._get_help_string(action).lower(), (command, action.dest)
    text = " ".join(sub.format_help().split())
    assert "(default: None)" not in text
    if command in ("evaluate", "predict"):
        assert "default: test" in text and "split folder" in text


def test_help_of_a_command_in_a_subprocess_shows_defaults():
    res = _engine("render", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "(default: madrazo2017)" in text and "(default: 16)" in text


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`python -m engine inspect ... | head`: the reader goes away; no BrokenPipeError traceback."""
    synthetic.write_synthetic(tmp_path, "events", 30, seed=1)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "inspect", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout.close()                     # before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == ""


def test_gbt_is_a_listed_model_with_a_clear_error_from_create_model():
    from engine.models import create_model, list_models, model_input
    assert "gbt" in list_models() and list_models() == sorted(list_models())
    with pytest.raises(InputError, match=r"python -m engine.train model.name=gbt"):
        create_model("gbt", 3)
    with pytest.raises(InputError, match=r"known models: .*gbt"):
        model_input("gbtt")


# ---- the demo: resume or refuse ----

def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def test_demo_refuses_a_used_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "parquet").mkdir()
    (tmp_path / "parquet" / "ttbar.parquet").write_bytes(b"mine")
    before = _snapshot(tmp_path)
    res = _engine("demo", "--out", tmp_path, "--events", "10")
    assert res.returncode == 2 and "holds no demo.json" in res.stderr and "Traceback" not in res.stderr
    assert _snapshot(tmp_path) == before


def test_demo_refuses_other_settings_without_touching_anything(tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps({"events": 3400, "workers": 2, "seed": 1}))
    (tmp_path / "parquet").mkdir()
    before = _snapshot(tmp_path)
    res = _engine("demo", "--out", tmp_path, "--events", "10")
    assert res.returncode == 2 and "--events 3400 --workers 2 --seed 1" in res.stderr
    assert _snapshot(tmp_path) == before
    (tmp_path / "demo.json").write_text("{not json")
    res = _engine("demo", "--out", tmp_path)
    assert res.returncode == 2 and f"{tmp_path / 'demo.json'}: unreadable" in res.stderr


class FakeDemo:
    """Runs the demo's data steps for real on tiny synthetic events and fakes the slow ones."""

    def __init__(self, out: Path, stop_at: str | None = None):
        self.out, self.stop_at, self.ran = out, stop_at, []

    def __call__(self, step) -> None:
        from engine.commands import demo
        text = shlex.join(step.argv)
        self.ran.append(text)
        if self.stop_at and self.stop_at in text:
            raise SystemExit(2)
        args = dict(zip(step.argv, step.argv[1:]))
        if step.argv[0] == "generate":
            self._generate(args["--process"], int(args["--seed"]), int(args["--events"]))
        elif step.python:
            from engine.config import to_dict
            from engine.training.checkpoint import write_run_info
            from engine.training.config import load_config
            overrides = [a for a in step.argv if "=" in a]
            write_run_info(dict(a.split("=", 1) for a in overrides)["output_dir"],
                           to_dict(load_config(None, overrides)), {"class_names": list(demo.CLASSES)})
        elif step.argv[0] == "evaluate":
            folder = Path(args["--out"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps({
                "accuracy": 0.9, "signal_vs_background_efficiency": 0.95,
                "roc_auc_one_vs_rest": {"ttbar": 0.99}, "train_seconds": 1.0}))
        else:
            assert main(step.argv) == 0

    def _generate(self, process: str, seed: int, events: int) -> None:
        """A one-part dataset as `generate` writes it (engine.data.canonical.parts)."""
        from engine.data.canonical import parts
        table = schema.events_table(synthetic.synthetic_events(process, events, seed), process, [process])
        folder = self.out / "parquet" / process
        parquet_io.write_table(folder / parts.part_name(0), table, "events", [process],
                               {"process": process, "seed": seed, "accepted": events})
        parts.write_document(folder, {"process": process, "settings": {"seed": seed}, "events": events,
                                      "tasks": 1, "complete": True,
                                      "parts": [{"name": parts.part_name(0), "accepted": events}]})


def _demo(monkeypatch, out: Path, fake: FakeDemo, events: int = 40) -> int:
    from engine.commands import demo
    monkeypatch.setattr(demo, "_run", fake)
    return main(["demo", "--out", str(out), "--events", str(events), "--workers", "1"])


def test_an_interrupted_demo_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    first = FakeDemo(out, stop_at="output_dir=" + str(out / "models" / "small_cnn"))
    with pytest.raises(SystemExit):
        _demo(monkeypatch, out, first)
    assert json.loads((out / "demo.json").read_text()) == {"events": 40, "workers": 1, "seed": 1}
    sheet = out / "images" / "contact_sheet.png"
    assert sheet.is_file() and (out / "shards" / "manifest.json").is_file()
    kept = _snapshot(out / "parquet")
    second = FakeDemo(out)
    assert _demo(monkeypatch, out, second) == 0
    commands = [c.split()[0] if not c.startswith("-m") else c.split()[-1] for c in second.ran]
    assert [c for c in second.ran if c.startswith(("generate", "shard", "render"))] == []
    assert sum("engine.train" in c for c in second.ran) == 2 and not any("set_transformer" in c and "engine.train"
                                                                           in c for c in second.ran)
    assert commands.count("inspect") == 2 and commands.count("evaluate") == 3
    assert _snapshot(out / "parquet") == kept
    assert "| gbt | 0.9000 |" in (out / "results.md").read_text()
    assert "resuming the demo" in capsys.readouterr().out
    third = FakeDemo(out)                   # complete: only inspect and evaluate run again
    assert _demo(monkeypatch, out, third) == 0
    assert not any("engine.train" in c for c in third.ran) and len(third.ran) == 5


def test_a_demo_folder_changed_by_hand_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit):
        _demo(monkeypatch, out, FakeDemo(out, stop_at="engine.train"), events=20)
    shutil.rmtree(out / "parquet" / "dy")                 # shards exist, one of their inputs does not
    before = _snapshot(out)
    fake = FakeDemo(out)
    assert _demo(monkeypatch, out, fake, events=20) == 2
    assert "is complete but its input" in capsys.readouterr().err and fake.ran == [] and _snapshot(out) == before
    FakeDemo(out)._generate("dy", 5, 21)                  # another seed and size than the demo's
    assert _demo(monkeypatch, out, fake, events=20) == 2
    assert f"{out / 'parquet' / 'dy'}: was not generated with this demo's settings" in capsys.readouterr().err


# ---- the contact sheet ----

def test_contact_sheet_has_a_row_per_class_and_each_tiles_identity(tmp_path, capsys):
    from engine.commands.render import first_padded, legend_entries, sheet_layout
    from kernels.presets import preset
    synthetic.write_synthetic(tmp_path / "pq", "events", 12, seed=4)
    from engine.data.shards import ShardOptions, write_shards
    write_shards([tmp_path / "pq"], tmp_path / "shards", ShardOptions(seed=4))
    padded, names = first_padded(str(tmp_path / "shards"), 3, "events", "train", per_class=True)
    assert np.bincount(padded["labels"]).tolist() == [3, 3, 3]
    assert [len(idx) for _, idx in sheet_layout(padded["labels"])] == [3, 3, 3]
    # the tiles' (run, lumi, event) are those of the events drawn: look them up in the Parquet input
    import pyarrow.parquet as pq
    for k in range(len(padded["labels"])):
        t = pq.read_table(tmp_path / "pq" / f"{names[padded['labels'][k]]}.parquet").to_pydict()
        row = t["event"].index(padded["event"][k])
        assert (t["run"][row], t["lumi"][row]) == (padded["run"][k], padded["lumi"][k])
        assert t["met_pt"][row] == pytest.approx(padded["features"][k, padded["counts"][k] - 1, 0], rel=2e-3)
    from_parquet, pq_names = first_padded(str(tmp_path / "pq"), 2, "events", None, per_class=True)
    assert sorted(pq_names) == sorted(names) and len(from_parquet["event"]) == 6
    assert [t for t, _ in legend_entries(preset("ochoa2023"))] == ["muon", "jet, b-jet", "MET (at $\\eta$ = 0)"]
    for source in (tmp_path / "shards" / "val", tmp_path / "pq"):
        assert main(["render", "--input", str(source), "--n", "2", "--per-class", "--size", "32",
                     "--out", str(tmp_path / "img")]) == 0
        assert (tmp_path / "img" / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["render", "--input", str(tmp_path / "shards" / "val"), "--split", "test",
                 "--out", str(tmp_path / "clash")]) == 2
    assert "is the 'val' split, not 'test'" in capsys.readouterr().err


def test_contact_sheet_of_old_shards_warns_once(tmp_path, capsys):
    synthetic.write_synthetic(tmp_path / "pq", "fatjets", 4, seed=2)
    from engine.data.shards import ShardOptions, write_shards
    write_shards([tmp_path / "pq"], tmp_path / "shards", ShardOptions(seed=2))
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    del manifest["splits"]["train"]["identity"]
    (tmp_path / "shards" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["render", "--input", str(tmp_path / "shards"), "--preset", "jet", "--n", "3", "--size", "32",
                 "--out", str(tmp_path / "img")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "carry no event identity" in err
    assert (tmp_path / "img" / "contact_sheet.png").is_file()



def test_render_out_under_a_file_is_one_line(tmp_path):
    """--out that is a file, or a folder under a file: one line naming --out's path, exit 2."""
    from tests.events import synthetic_shards
    (tmp_path / "afile").write_text("x")
    shards = synthetic_shards(tmp_path / "data", 20, seed=1, events_per_member=16)
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        res = subprocess.run([sys.executable, "-m", "engine", "render", "--input", str(shards), "--n", "2",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith(f"error: {out}: ")
    assert (tmp_path / "afile").read_text() == "x"


def test_atomic_writes_under_a_file_name_it(tmp_path):
    from engine.errors import InputError
    from engine.files import atomic_path
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file, not the folder"):
        with atomic_path(tmp_path / "afile" / "out.json"):
            pass
    with pytest.raises(InputError, match=f"cannot make the folder: {tmp_path / 'afile'} is a file"):
        with atomic_path(tmp_path / "afile" / "deeper" / "out.json"):
            pass
