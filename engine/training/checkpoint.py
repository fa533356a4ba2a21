"""Checkpoints: Accelerate's full state mid-run, and the exported model at the end.

    OUTPUT_DIR/checkpoints/step_0000200/  accelerator.save_state + config.yaml + trainer_state.json
    OUTPUT_DIR/model.safetensors          the unwrapped model's weights (engine.training.weights format)
    OUTPUT_DIR/config.yaml                the resolved config, beside the weights
    OUTPUT_DIR/run.json                   class names, dataset kind, input kind, steps, timings

A checkpoint is written into a hidden folder (`.step_0000200.partial`) and renamed to its final
name only when complete, trainer_state.json last: every reader sees a complete checkpoint or none.
Accelerate's part holds the model, optimizer, scheduler, GradScaler and every process's RNG states;
trainer_state.json holds the loop's position, each process's loader position and unlogged loss
window, the last validation metrics and the number of log.csv rows written so far.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from engine.errors import InputError
from engine.files import atomic_path

KEEP_CHECKPOINTS = 2
NAME = re.compile(r"step_\d{7}")


@dataclass
class TrainerState:
    """Where the run is: epoch, batches done in it, optimizer steps so far, per-process positions
    (`ranks[i]`: loader state and partial log window of process i), the last validation metrics
    and the log rows written."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    ranks: list | None = None
    images_seen: int = 0
    seconds: float = 0.0
    val: dict = field(default_factory=dict)
    log_rows: int = 0


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def _complete(folders) -> list[Path]:
    return sorted(f for f in folders if NAME.fullmatch(f.name) and (f / "trainer_state.json").is_file())


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (step_NNNNNNN with trainer_state.json) or None."""
    found = _complete((Path(output_dir) / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def clean_checkpoints(output_dir: str | Path) -> list[Path]:
    """Remove what a killed run left: partial checkpoint folders and folders without
    trainer_state.json. Returns the removed folders (main process only)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    complete = set(_complete(root.iterdir()))
    removed = [f for f in sorted(root.iterdir()) if f.is_dir() and f not in complete]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def save_checkpoint(accelerator, output_dir: str | Path, state: TrainerState, config: dict) -> Path:
    """Save the full training state (all processes call this). The folder appears under its final
    name only when complete; a checkpoint of the same step is replaced. Older checkpoints beyond
    KEEP_CHECKPOINTS are removed."""
    folder = checkpoint_dir(output_dir, state.step)
    partial = folder.with_name(f".{folder.name}.partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()          # every process's RNG states are in the folder
    if accelerator.is_main_process:
        (partial / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (partial / "trainer_state.json").write_text(json.dumps(asdict(state), indent=1))
        _replace_folder(partial, folder)
        for old in _complete(folder.parent.iterdir())[:-KEEP_CHECKPOINTS]:
            _remove_folder(old)
    accelerator.wait_for_everyone()
    return folder


def _replace_folder(new: Path, final: Path) -> None:
    """Rename `new` to `final`; an existing `final` is removed first."""
    if final.exists():
        _remove_folder(final)
    os.replace(new, final)


def _remove_folder(folder: Path) -> None:
    """Hide a checkpoint folder (one rename), then delete it: never half a checkpoint in view."""
    hidden = folder.with_name(f".{folder.name}.old")
    if hidden.exists():
        shutil.rmtree(hidden)
    os.replace(folder, hidden)
    shutil.rmtree(hidden)


def read_trainer_state(folder: Path) -> TrainerState:
    """The trainer state of a checkpoint folder; a corrupt file is an InputError naming it."""
    path = folder / "trainer_state.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable trainer state ({exc}); delete the checkpoint folder "
                               "to resume from the one before it") from None
    known = {f.name for f in fields(TrainerState)}
    if not isinstance(data, dict) or set(data) - known or not {"epoch", "batch", "step"} <= set(data):
        raise InputError(path, f"not a trainer state (expected the keys {sorted(known)})")
    return TrainerState(**data)


def load_checkpoint(accelerator, folder: Path) -> None:
    """Load Accelerate's part of a checkpoint; unreadable files are an InputError naming the folder.
    The process's RNG states are checked first: Accelerate skips unreadable ones silently."""
    import pickle

    import torch
    from safetensors import SafetensorError
    try:
        rng = torch.load(folder / f"random_states_{accelerator.process_index}.pkl", weights_only=False)
        if not isinstance(rng, dict) or "torch_manual_seed" not in rng:
            raise ValueError("random states without the torch generator's state")
        accelerator.load_state(str(folder))
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError,
            SafetensorError) as exc:
        raise InputError(folder, f"cannot load the checkpoint ({type(exc).__name__}: {exc}); delete "
                                 "this folder to resume from the one before it") from None


def write_run_info(output_dir: str | Path, config: dict, run: dict) -> None:
    """config.yaml (the resolved config) and run.json (what the model was trained on), atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(run, indent=1))


def export_model(model, output_dir: str | Path, config: dict, run: dict) -> Path:
    """Write model.safetensors, config.yaml and run.json (main process only); run.json comes last."""
    from engine.training.weights import save_weights
    save_weights(model, Path(output_dir) / "model.safetensors")
    write_run_info(output_dir, config, run)
    return Path(output_dir) / "model.safetensors"


def is_exported(output_dir: str | Path, state: TrainerState) -> bool:
    """Whether the model of the run that ended in `state` has been exported (run.json, written
    last, matches its steps and epochs)."""
    out = Path(output_dir)
    if not all((out / name).is_file() for name in ("model.safetensors", "config.yaml", "run.json")):
        return False
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(run, dict) and (run.get("steps"), run.get("epochs")) == (state.step, state.epoch)
