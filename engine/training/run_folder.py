"""The run-folder guard: an `output_dir` holds one run, trained with one config.

`guard_run_folder(cfg, allow_changes)` runs before any work (`python -m engine.train` calls it, on
every rank; only rank 0 writes) and compares the resolved config
(`engine.config.to_dict(cfg)`, as dotted keys: `train.lr`, `model.options.dim`) with the run already
in the folder:

  no run there    a fresh run: its resolved config is written to OUTPUT_DIR/config.yaml at once
                  (atomically), so that a run killed before its first checkpoint is recognised
  same config     resume, or nothing to do for a finished run; nothing is written
  another config  InputError listing the differing keys with old and new values; with
                  `allow_changes` (`--resume-with-changes`) the run goes on and the change is
                  appended to OUTPUT_DIR/config_changes.yaml with the step of the newest checkpoint;
                  another architecture (`FIXED` keys) after something was trained: always refused

The run's config is OUTPUT_DIR/config.yaml (or, without it, the newest checkpoint's config.yaml)
with the recorded changes applied in order; config.yaml itself is rewritten only by a run that
trains. `IGNORED` keys cannot change what is trained and may differ freely.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from engine.config import to_dict
from engine.errors import InputError
from engine.files import atomic_path
from engine.training.checkpoint import latest_checkpoint, read_trainer_state

CONFIG = "config.yaml"
CHANGES = "config_changes.yaml"
IGNORED = ("output_dir", "train.log_every_steps", "train.checkpoint_every_steps", "train.record_events")
"""The folder itself (a run folder may be moved), and keys that only choose what is logged,
checkpointed or recorded: the weights, the metrics and the events' order do not depend on them."""
FIXED = ("model.name", "model.options")
"""Keys that define the architecture: a run that trained one cannot go on with another (only gbt,
fitted from scratch each time, may change its options)."""
RUN_FILES = ("model.safetensors", "gbt.pkl", "run.json", "log.csv")
"""Files that show a run was (at least) started in a folder."""


def guard_run_folder(cfg, allow_changes: bool = False) -> str:
    """'fresh', 'same' or 'changed' for the run of `cfg` in `cfg.output_dir` (see the module
    docstring); InputError naming the differing keys when the folder holds another config."""
    folder = Path(cfg.output_dir)
    new = resolved_config(cfg)
    old = run_config(folder)
    if old is None:
        unknown = _holds_a_run(folder)
        if unknown and not allow_changes:
            raise InputError(folder, "holds a run without a config.yaml, so it cannot be checked to be the same "
                                     "run; choose another output_dir (or pass --resume-with-changes)")
        if _is_main_process():
            if unknown:
                record_changes(folder, {}, note="the folder held a run without a config")
            with atomic_path(folder / CONFIG) as tmp:
                tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return "fresh"
    changes = differences(old, new)
    if not changes:
        return "same"
    listed = ", ".join(f"{key} {_show(ch, 'old')} -> {_show(ch, 'new')}" for key, ch in changes.items())
    refit = cfg.model.name == "gbt" and old.get("model.name") == "gbt"   # gbt is fitted from scratch
    if not refit and _has_trained(folder) and any(_is_fixed(key) for key in changes):
        raise InputError(folder, f"holds a run of another model: {listed}; what it trained cannot be resumed "
                                 "with another architecture, so choose another output_dir")
    if not allow_changes:
        raise InputError(folder, f"holds a run with another config: {listed}; choose another output_dir, "
                                 "or pass --resume-with-changes to continue this run with the new config")
    if _is_main_process():
        record_changes(folder, changes)
    return "changed"


def resolved_config(cfg) -> dict:
    """The resolved config as {dotted key: value}, as it reads back from YAML, IGNORED keys left out."""
    return _without_ignored(flatten(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))))


def run_config(folder: Path) -> dict | None:
    """The config of the run in `folder` (dotted keys, IGNORED left out, recorded changes applied),
    or None when the folder holds no config."""
    path = folder / CONFIG
    if not path.is_file():
        newest = latest_checkpoint(folder)
        path = newest / CONFIG if newest is not None else path
    if not path.is_file():
        return None
    config = flatten(_read_yaml(path, dict))
    for record in _read_yaml(folder / CHANGES, list) if (folder / CHANGES).is_file() else []:
        for key, change in (record.get("changes") or {}).items():
            if "new" in change:
                config[key] = change["new"]
            else:
                config.pop(key, None)
    return _without_ignored(config)


def differences(old: dict, new: dict) -> dict[str, dict]:
    """{key: {"old": value, "new": value}} for every key whose value differs; a side's value is left
    out where that side does not have the key. In the order of `new`, then keys only in `old`."""
    keys = list(new) + [key for key in old if key not in new]
    changes = {}
    for key in keys:
        if key not in old or key not in new or old[key] != new[key]:
            changes[key] = {side: values[key] for side, values in (("old", old), ("new", new)) if key in values}
    return changes


def record_changes(folder: Path, changes: dict[str, dict], note: str | None = None) -> None:
    """Append {step, changes[, note]} to OUTPUT_DIR/config_changes.yaml (rewritten atomically);
    `step` is that of the newest checkpoint (0 without one)."""
    path = folder / CHANGES
    records = _read_yaml(path, list) if path.is_file() else []
    records.append({"step": _newest_step(folder), "changes": changes, **({"note": note} if note else {})})
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(records, sort_keys=False))


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested mappings as {dotted key: leaf value} (an empty mapping adds no key: `model.options: {}`
    and `model.options.dim: 8` differ by `model.options.dim` alone)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _without_ignored(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in IGNORED}


def _is_fixed(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in FIXED)


def _has_trained(folder: Path) -> bool:
    """A checkpoint or a trained model is there."""
    trained = ("model.safetensors", "gbt.pkl")
    return latest_checkpoint(folder) is not None or any((folder / name).is_file() for name in trained)


def _holds_a_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES) or any((folder / "checkpoints").glob("step_*"))


def _newest_step(folder: Path) -> int:
    newest = latest_checkpoint(folder)
    return 0 if newest is None else read_trainer_state(newest).step


def _read_yaml(path: Path, kind: type):
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"unreadable ({exc.__class__.__name__}); the run folder is damaged") from None
    if not isinstance(data, kind):
        what = "mapping" if kind is dict else "list"
        raise InputError(path, f"expected a YAML {what}; the run folder is damaged")
    return data


def _show(change: dict, side: str) -> str:
    return repr(change[side]) if side in change else "(absent)"


def _is_main_process() -> bool:
    """Rank 0 of an `accelerate launch` (or the only process): the one that writes the folder."""
    return os.environ.get("RANK", "0") == "0"
