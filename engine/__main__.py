"""Command line: `python -m engine <command> ...`.

Each command lives in `engine/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; it is imported only when used, so `--help` stays fast. An `InputError`
anywhere becomes one line on stderr and exit code 2. `python -m engine train ...` is
`python -m engine.train ...` (the arguments are passed through unchanged).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from engine.errors import EXIT_BAD_INPUT, InputError

COMMANDS = {
    "generate": "Monte Carlo events with Pythia 8 + FastJet -> Parquet",
    "convert": "NanoAOD / Delphes ROOT or the 2017 study's JSON -> Parquet",
    "inspect": "summarise Parquet files or shards",
    "shard": "Parquet -> WebDataset shards with a manifest",
    "render": "draw event or jet images from Parquet or shards",
    "train": "train a model from a config (the same as `python -m engine.train`)",
    "evaluate": "metrics and plots of a trained model on a shard split",
    "predict": "per-event scores and mass plots of a trained model",
    "sweep": "a grid of training runs from a sweep file",
    "demo": "the main job end to end on a built-in default",
}


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except where there is none or the help already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or not action.option_strings or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)".lstrip()


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, summary in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary, formatter_class=DefaultsFormatter)
        if name == chosen and name != "train":
            _module(name).add_arguments(cmd)
            for action in cmd._actions:       # argparse prints no line at all for an option without help
                if action.help is None and action.option_strings and action.default is not None:
                    action.help = "(default: %(default)s)"
    return parser


def _module(name: str):
    return importlib.import_module(f"engine.commands.{name}")


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["train"]:
        from engine.train import main as train_main
        return train_main(argv[1:])
    args = build_parser(argv).parse_args(argv)
    try:
        return _module(args.command).run(args) or 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _dispatch(argv)
        sys.stdout.flush()          # a closed pipe shows here, inside the handler below
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`... | head`): as Python's documentation of SIGPIPE recommends,
        # point stdout at devnull so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
