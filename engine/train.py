"""Train a classifier on shards, on one CPU or many GPUs with the same command.

    accelerate launch -m engine.train --config configs/ci-tiny.yaml [section.key=value ...]
    python -m engine.train --config configs/ci-tiny.yaml            # one process, CPU or GPU

The entry point: the config is loaded and checked against the shards, the run folder guarded
(engine.training.run_folder), then the model's trainer runs: the network loop
(engine.training.trainer) or the gradient-boosted trees (engine.training.gbt).
"""
from __future__ import annotations

import argparse
import sys

from engine.errors import EXIT_BAD_INPUT, InputError
from engine.training.config import TrainConfig, check_inputs, load_config
from engine.training.run_folder import guard_run_folder
from engine.training.trainer import train


def _train_gbt(cfg: TrainConfig) -> None:
    from engine.training.gbt import train_gbt
    train_gbt(cfg)                     # does nothing for a finished run of this config


TRAINERS = {"gbt": _train_gbt}
"""Trainers by model name, each called with the config; every other model is a network trained by
engine.training.trainer (which, too, leaves a finished run of the same config untouched)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/NAME.yaml); defaults are used without one")
    parser.add_argument("overrides", nargs="*", help="section.key=value (value parsed as YAML)")
    parser.add_argument("--resume-with-changes", action="store_true",
                        help="go on with a run in output_dir whose config differs from this one "
                             "(the changes are recorded in output_dir/config_changes.yaml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_inputs(cfg)
        guard_run_folder(cfg, allow_changes=args.resume_with_changes)
        TRAINERS.get(cfg.model.name, train)(cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
