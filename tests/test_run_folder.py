"""The run-folder guard: a fresh run writes its config first, the same config changes nothing, another
config is refused naming the differing keys, and --resume-with-changes records what changed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.config import to_dict
from engine.errors import InputError
from engine.training.config import load_config
from engine.training.run_folder import CHANGES, guard_run_folder, run_config
from tests.events import synthetic_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("run_folder_data"), 20, seed=0, events_per_member=16)


def config(shards, out, *overrides):
    return load_config(None, [f"data.shards={shards}", f"output_dir={out}", "model.name=deepsets",
                              "train.batch_size=16", "train.max_steps=2", *overrides])


def fake_checkpoint(out: Path, step: int, cfg=None) -> Path:
    """A checkpoint folder as the trainer leaves it: trainer_state.json and, where given, config.yaml."""
    folder = out / "checkpoints" / f"step_{step:07d}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"epoch": 0, "batch": step, "step": step}))
    if cfg is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return folder


def test_fresh_run_writes_its_config_and_the_same_config_writes_nothing(shards, tmp_path):
    cfg = config(shards, tmp_path / "run")
    assert guard_run_folder(cfg) == "fresh"
    written = (tmp_path / "run" / "config.yaml").read_bytes()
    assert yaml.safe_load(written) == yaml.safe_load(yaml.safe_dump(to_dict(cfg)))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]   # no temporary left
    mtime = (tmp_path / "run" / "config.yaml").stat().st_mtime_ns
    time.sleep(0.01)
    assert guard_run_folder(cfg) == "same"
    assert guard_run_folder(cfg, allow_changes=True) == "same"
    assert (tmp_path / "run" / "config.yaml").stat().st_mtime_ns == mtime
    assert not (tmp_path / "run" / CHANGES).exists()


def test_differing_keys_are_listed_with_old_and_new_values(shards, tmp_path):
    out = tmp_path / "run"
    guard_run_folder(config(shards, out))
    before = (out / "config.yaml").read_bytes()
    changed = config(shards, out, "train.lr=1e-4", "model.options.dim=8", "data.signal=ttbar")
    with pytest.raises(InputError) as err:
        guard_run_folder(changed)
    message = str(err.value)
    assert message.startswith(f"{out}: holds a run with another config: ")
    assert ("train.lr 0.001 -> 0.0001" in message and "model.options.dim (absent) -> 8" in message
            and "data.signal None -> 'ttbar'" in message and "--resume-with-changes" in message)
    assert "\n" not in message and (out / "config.yaml").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_keys_that_cannot_change_the_result_may_differ(shards, tmp_path):
    guard_run_folder(config(shards, tmp_path / "run"))
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    same = config(shards, moved, "train.log_every_steps=1", "train.checkpoint_every_steps=7",
                  "train.record_events=true")
    assert guard_run_folder(same) == "same"
    with pytest.raises(InputError, match="another config: train.eval_every_epochs 1 -> 2;"):
        guard_run_folder(config(shards, moved, "train.eval_every_epochs=2"))


def test_resume_with_changes_records_them_and_they_become_the_run_config(shards, tmp_path):
    out = tmp_path / "run"
    guard_run_folder(config(shards, out))
    fake_checkpoint(out, 2)
    before = (out / "config.yaml").read_bytes()
    assert guard_run_folder(config(shards, out, "train.lr=1e-4"), allow_changes=True) == "changed"
    assert (out / "config.yaml").read_bytes() == before          # rewritten only by a run that trains
    records = yaml.safe_load((out / CHANGES).read_text())
    assert records == [{"step": 2, "changes": {"train.lr": {"old": 0.001, "new": 0.0001}}}]
    assert guard_run_folder(config(shards, out, "train.lr=1e-4")) == "same"
    with pytest.raises(InputError, match="train.lr 0.0001 -> 0.001"):
        guard_run_folder(config(shards, out))                    # the old config is now the change
    fake_checkpoint(out, 4)
    more = config(shards, out, "train.lr=1e-4", "train.epochs=3")
    assert guard_run_folder(more, allow_changes=True) == "changed"
    records = yaml.safe_load((out / CHANGES).read_text())
    assert [r["step"] for r in records] == [2, 4]
    assert records[1]["changes"] == {"train.epochs": {"old": 1, "new": 3}}
    assert run_config(out)["train.lr"] == 0.0001 and run_config(out)["train.epochs"] == 3


def test_newest_checkpoint_config_stands_in_for_a_missing_config_yaml(shards, tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out, 2, config(shards, out, "train.lr=0.5"))
    fake_checkpoint(out, 4, config(shards, out, "train.lr=0.25"))
    assert guard_run_folder(config(shards, out, "train.lr=0.25")) == "same"
    assert not (out / "config.yaml").exists()
    with pytest.raises(InputError, match="train.lr 0.25 -> 0.5"):
        guard_run_folder(config(shards, out, "train.lr=0.5"))


def test_a_run_without_any_config_is_not_reused_silently(shards, tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out, 2)
    with pytest.raises(InputError, match="holds a run without a config.yaml"):
        guard_run_folder(config(shards, out))
    assert not (out / "config.yaml").exists()
    assert guard_run_folder(config(shards, out), allow_changes=True) == "fresh"
    assert yaml.safe_load((out / CHANGES).read_text()) == [
        {"step": 2, "changes": {}, "note": "the folder held a run without a config"}]
    assert guard_run_folder(config(shards, out)) == "same"
    other = tmp_path / "unrelated"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    assert guard_run_folder(config(shards, other)) == "fresh"      # other files are no run


def test_another_architecture_is_refused_even_with_changes_allowed(shards, tmp_path):
    out = tmp_path / "run"
    guard_run_folder(config(shards, out))
    assert guard_run_folder(config(shards, out, "model.options.dim=8"), allow_changes=True) == "changed"
    fake_checkpoint(out, 2)                                      # now it has trained something
    for change in ("model.name=ffn", "model.options.dim=16"):
        with pytest.raises(InputError, match="holds a run of another model: .*choose another output_dir"):
            guard_run_folder(config(shards, out, "model.options.dim=8", change), allow_changes=True)
    assert len(yaml.safe_load((out / CHANGES).read_text())) == 1


@pytest.mark.parametrize("text, problem", [("train: [1, 2\n", "unreadable"),
                                           ("- a\n- b\n", "expected a YAML mapping")])
def test_a_damaged_config_yaml_is_a_clear_error(shards, tmp_path, text, problem):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(text)
    with pytest.raises(InputError, match=f"config.yaml: {problem}.*damaged"):
        guard_run_folder(config(shards, out))
    assert (out / "config.yaml").read_text() == text


def test_a_damaged_change_record_is_a_clear_error(shards, tmp_path):
    out = tmp_path / "run"
    guard_run_folder(config(shards, out))
    (out / CHANGES).write_text("step: 2\n")
    with pytest.raises(InputError, match=f"{CHANGES}: expected a YAML list; the run folder is damaged"):
        guard_run_folder(config(shards, out, "train.lr=0.5"), allow_changes=True)
    assert (out / CHANGES).read_text() == "step: 2\n"


def _train(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, "-m", "engine.train", *map(str, args)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert not check or res.returncode == 0, res.stderr
    return res


@pytest.mark.slow
def test_cli_refuses_another_config_and_resumes_with_changes_recorded(shards, tmp_path, capsys):
    out = tmp_path / "run"
    base = [f"data.shards={shards}", f"output_dir={out}", "model.name=deepsets", "train.batch_size=16",
            "train.max_steps=2", "train.checkpoint_every_steps=1"]
    _train(*base)
    before = {p: p.read_bytes() for p in [out / "config.yaml", out / "model.safetensors", out / "log.csv"]}
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    res = _train(*base, "train.lr=1e-4", check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"error: {out}: holds a run with another config: train.lr 0.001 -> 0.0001; "
                                  "choose another output_dir, or pass --resume-with-changes to continue this "
                                  "run with the new config")
    from engine.train import main
    assert main(base + ["model.name=ffn", "--resume-with-changes"]) == 2
    assert "holds a run of another model: model.name 'deepsets' -> 'ffn';" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints
    assert not (out / CHANGES).exists()
    _train(*base, "train.lr=1e-4", "train.epochs=2", "train.max_steps=3", "--resume-with-changes")
    records = yaml.safe_load((out / CHANGES).read_text())
    assert records == [{"step": 2, "changes": {"train.epochs": {"old": 1, "new": 2},
                                               "train.lr": {"old": 0.001, "new": 0.0001},
                                               "train.max_steps": {"old": 2, "new": 3}}}]
    assert json.loads((out / "run.json").read_text())["steps"] == 3


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_is_recognised(shards, tmp_path):
    out = tmp_path / "run"
    args = [f"data.shards={shards}", f"output_dir={out}", "model.name=deepsets", "train.batch_size=16",
            "train.epochs=1000", "train.checkpoint_every_steps=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "engine.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "config.yaml").is_file() and not (out / "checkpoints").exists()
    before = (out / "config.yaml").read_bytes()
    res = _train(*args, "train.lr=0.01", check=False)
    assert res.returncode == 2 and "train.lr 0.001 -> 0.01" in res.stderr and "Traceback" not in res.stderr
    assert (out / "config.yaml").read_bytes() == before


def test_gbt_with_the_same_config_on_a_finished_run_does_nothing(shards, tmp_path, capsys):
    from engine.train import main
    out = tmp_path / "gbt"
    base = [f"data.shards={shards}", f"output_dir={out}", "model.name=gbt", "model.options.max_iter=3"]
    assert main(base) == 0
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()
    assert main(base) == 0 and "is finished with this config; nothing to do" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == files
    assert main(base + ["model.options.max_iter=4"]) == 2
    assert "model.options.max_iter 3 -> 4" in capsys.readouterr().err
    assert main(base + ["model.options.max_iter=4", "--resume-with-changes"]) == 0   # gbt is refitted
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["options"] == {"max_iter": 4}
    assert guard_run_folder(load_config(None, base + ["model.options.max_iter=4"])) == "same"


def test_gbt_killed_before_its_run_json_is_trained_again(shards, tmp_path):
    """gbt.pkl written, run.json not (killed between them): the rerun fits again and finishes."""
    from engine.train import main
    out = tmp_path / "gbt"
    base = [f"data.shards={shards}", f"output_dir={out}", "model.name=gbt", "model.options.max_iter=3"]
    assert main(base) == 0
    (out / "run.json").unlink()
    assert main(base) == 0 and (out / "run.json").is_file()
