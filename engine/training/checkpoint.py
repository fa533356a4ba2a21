"""Checkpoints: Accelerate's full state mid-run, and the exported model at the end.

    OUTPUT_DIR/checkpoints/step_000200/   accelerator.save_state + trainer_state.json
    OUTPUT_DIR/model.safetensors          the unwrapped model's weights (engine.models.transfer format)
    OUTPUT_DIR/config.yaml                the resolved config, beside the weights
    OUTPUT_DIR/run.json                   class names, dataset kind, input kind, steps, timings
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from engine.data.parquet_io import atomic_path

KEEP_CHECKPOINTS = 2


@dataclass
class TrainerState:
    """Where the run is: epoch, batches done in it, optimizer steps so far, and the loader position."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loader: dict | None = None
    images_seen: int = 0
    seconds: float = 0.0


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (one with trainer_state.json) or None."""
    found = sorted((Path(output_dir) / "checkpoints").glob("step_*/trainer_state.json"))
    return found[-1].parent if found else None


def save_checkpoint(accelerator, output_dir: str | Path, state: TrainerState) -> Path:
    """Save the full training state; trainer_state.json is written last, so a checkpoint without it
    is incomplete and ignored. Older checkpoints beyond KEEP_CHECKPOINTS are removed."""
    folder = checkpoint_dir(output_dir, state.step)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        with atomic_path(folder / "trainer_state.json") as tmp:
            tmp.write_text(json.dumps(asdict(state), indent=1))
        for old in sorted((Path(output_dir) / "checkpoints").glob("step_*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(accelerator, folder: Path) -> TrainerState:
    accelerator.load_state(str(folder))
    return TrainerState(**json.loads((folder / "trainer_state.json").read_text()))


def write_run_info(output_dir: str | Path, config: dict, run: dict) -> None:
    """config.yaml (the resolved config) and run.json (what the model was trained on), atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(run, indent=1))


def export_model(model, output_dir: str | Path, config: dict, run: dict) -> Path:
    """Write model.safetensors, config.yaml and run.json (main process only)."""
    from engine.models.transfer import save_weights
    save_weights(model, Path(output_dir) / "model.safetensors")
    write_run_info(output_dir, config, run)
    return Path(output_dir) / "model.safetensors"
