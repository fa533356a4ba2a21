"""Tests for engine.training.checkpoint: checkpoints are complete or invisible, the newest complete
one is found, what a killed run left is removed, corrupt files are errors naming them, and the
exported model is recognised only when it matches the run's end."""
import json
import os
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import InputError
from engine.training.checkpoint import (KEEP_CHECKPOINTS, TrainerState, checkpoint_dir, clean_checkpoints,
                                        export_model, is_exported, latest_checkpoint, load_checkpoint,
                                        read_trainer_state, save_checkpoint)
from tests.events import reset_accelerate


def fake_checkpoint(out, step: int, complete: bool = True):
    folder = checkpoint_dir(out, step)
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"epoch": 0, "batch": 1, "step": step}))
    return folder


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    model = torch.nn.Linear(3, 2)
    acc = Accelerator(cpu=True)
    acc.model, acc.optimizer = acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    yield acc
    reset_accelerate()


def test_latest_is_the_newest_complete_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    fake_checkpoint(tmp_path, 3)
    fake_checkpoint(tmp_path, 12)
    fake_checkpoint(tmp_path, 20, complete=False)              # killed before trainer_state.json
    (tmp_path / "checkpoints" / ".step_0000030.partial").mkdir()
    (tmp_path / "checkpoints" / "step_31").mkdir()             # not a checkpoint name
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 12)


def test_clean_removes_partial_and_incomplete_folders_only(tmp_path):
    assert clean_checkpoints(tmp_path) == []
    keep = fake_checkpoint(tmp_path, 3)
    incomplete = fake_checkpoint(tmp_path, 6, complete=False)
    partial = tmp_path / "checkpoints" / ".step_0000009.partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    (tmp_path / "checkpoints" / "notes.txt").write_text("a file is left alone")
    assert sorted(clean_checkpoints(tmp_path)) == sorted([incomplete, partial])
    assert keep.is_dir() and not incomplete.exists() and not partial.exists()
    assert (tmp_path / "checkpoints" / "notes.txt").is_file()


def test_trainer_state_round_trips(tmp_path):
    state = TrainerState(epoch=2, batch=5, step=19, ranks=[{"loader": {"a": 1}, "window": [1.5, 3, 4, 2]}],
                         images_seen=600, seconds=1.25, val={"accuracy": 0.5}, log_rows=7)
    folder = fake_checkpoint(tmp_path, 19, complete=False)
    (folder / "trainer_state.json").write_text(json.dumps(asdict(state)))
    assert read_trainer_state(folder) == state


@pytest.mark.parametrize("text, problem", [
    ("{\"epoch\": 1", "unreadable trainer state"), ("\xff\xfe", "unreadable trainer state"),
    ("[1, 2]", "not a trainer state"), ('{"epoch": 0, "batch": 0}', "not a trainer state"),
    ('{"epoch": 0, "batch": 0, "step": 1, "lr": 3}', "not a trainer state")])
def test_a_corrupt_trainer_state_is_an_error_naming_the_file(tmp_path, text, problem):
    folder = fake_checkpoint(tmp_path, 4)
    (folder / "trainer_state.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=problem) as err:
        read_trainer_state(folder)
    assert str(folder / "trainer_state.json") in str(err.value)


def test_save_keeps_the_newest_and_replaces_the_same_step(tmp_path, accelerator):
    for step in range(1, KEEP_CHECKPOINTS + 3):
        save_checkpoint(accelerator, tmp_path, TrainerState(step=step), {"train": {"seed": step}})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [checkpoint_dir(tmp_path, s).name for s in range(3, KEEP_CHECKPOINTS + 3)]
    last = KEEP_CHECKPOINTS + 2
    save_checkpoint(accelerator, tmp_path, TrainerState(step=last, batch=9), {"train": {"seed": 0}})
    folder = latest_checkpoint(tmp_path)
    assert read_trainer_state(folder) == TrainerState(step=last, batch=9)
    assert "seed: 0" in (folder / "config.yaml").read_text()
    assert len(list((tmp_path / "checkpoints").iterdir())) == KEEP_CHECKPOINTS


def test_load_restores_the_saved_weights(tmp_path, accelerator):
    folder = save_checkpoint(accelerator, tmp_path, TrainerState(step=1), {})
    saved = {k: v.clone() for k, v in accelerator.model.state_dict().items()}
    with torch.no_grad():
        accelerator.model.weight.add_(1.0)
    load_checkpoint(accelerator, folder)
    assert all(torch.equal(saved[k], v) for k, v in accelerator.model.state_dict().items())


@pytest.mark.parametrize("name", ["random_states_0.pkl", "model.safetensors", "optimizer.bin"])
def test_a_truncated_checkpoint_file_is_an_error_naming_the_folder(tmp_path, accelerator, name):
    folder = save_checkpoint(accelerator, tmp_path, TrainerState(step=1), {})
    path = folder / name
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(InputError, match="cannot load the checkpoint") as err:
        load_checkpoint(accelerator, folder)
    assert str(folder) in str(err.value)


def test_exported_only_when_run_json_matches_the_end_of_the_run(tmp_path):
    state = TrainerState(epoch=2, step=14)
    assert not is_exported(tmp_path, state)
    model = torch.nn.Linear(3, 2)
    export_model(model, tmp_path, {"model": {"name": "x"}}, {"steps": 14, "epochs": 2})
    assert torch.equal(load_file(tmp_path / "model.safetensors")["weight"], model.weight.detach())
    assert is_exported(tmp_path, state)
    assert not is_exported(tmp_path, TrainerState(epoch=2, step=13))
    (tmp_path / "run.json").write_text("{not json")
    assert not is_exported(tmp_path, state)
    export_model(model, tmp_path, {}, {"steps": 14, "epochs": 2})
    (tmp_path / "config.yaml").unlink()
    assert not is_exported(tmp_path, state)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temporaries left
