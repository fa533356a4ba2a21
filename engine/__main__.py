"""Command line: `python -m engine <command> ...`.

Each command lives in `engine/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; it is imported only when used, so `--help` stays fast. An `InputError`
anywhere becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from engine.errors import EXIT_BAD_INPUT, InputError

COMMANDS = {
    "generate": "Monte Carlo events with Pythia 8 + FastJet -> Parquet",
    "convert": "NanoAOD / Delphes ROOT or the 2017 study's JSON -> Parquet",
    "inspect": "summarise Parquet files or shards",
    "shard": "Parquet -> WebDataset shards with a manifest",
    "render": "draw event or jet images from Parquet or shards",
    "evaluate": "metrics and plots of a trained model on a shard split",
    "predict": "per-event scores and mass plots of a trained model",
    "sweep": "a grid of training runs from a sweep file",
    "demo": "the main job end to end on a built-in default",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, summary in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            _module(name).add_arguments(cmd)
    return parser


def _module(name: str):
    return importlib.import_module(f"engine.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return _module(args.command).run(args) or 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
