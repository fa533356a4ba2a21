"""`python -m engine convert INPUT... --out DIR --label NAME`: NanoAOD / Delphes / JSON -> Parquet.

One output per input, `DIR/<input stem>.parquet`, with process = label = NAME (class_names [NAME]),
and `DIR/convert.json`, the record of the run (inputs converted, inputs failed and why), written
last. A run that fails leaves DIR as it was.
Exit codes: 0 when every input was converted, or with --skip-bad when at least one was;
2 for bad input (one line `error: FILE: problem` per bad input; with --skip-bad, after the others).
"""
from __future__ import annotations

import argparse
import sys

from engine.data.canonical.selection import PRESETS, load_selection
from engine.data.conversion.convert import (DEFAULT_STEP_SIZE, FORMATS, ConvertResult, Failure, convert_all,
                                            plan_jobs)
from engine.errors import EXIT_BAD_INPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="ROOT or JSON event files")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the Parquet files")
    parser.add_argument("--label", required=True, metavar="NAME",
                        help="process name of every event (the file's only class)")
    parser.add_argument("--format", default="auto", metavar="FORMAT",
                        help=f"one of {', '.join(FORMATS)} (default: auto, from the file's content)")
    parser.add_argument("--selection", default="madrazo2017", metavar="SEL",
                        help=f"preset ({', '.join(PRESETS)}) or a YAML file (default: madrazo2017)")
    parser.add_argument("--workers", type=int, default=1, help="input files converted in parallel")
    parser.add_argument("--skip-bad", action="store_true",
                        help="go on past bad inputs and report them at the end")
    parser.add_argument("--step-size", type=int, default=DEFAULT_STEP_SIZE, metavar="N",
                        help=f"events read per chunk (default: {DEFAULT_STEP_SIZE:,})")


def run(args: argparse.Namespace) -> int:
    selection = load_selection(args.selection)
    jobs = plan_jobs(args.inputs, args.out, args.label, args.format, selection, args.step_size)
    done, failures = convert_all(jobs, args.out, workers=args.workers, skip_bad=args.skip_bad,
                                 on_result=_print_result)
    _summary(done, failures)
    return 0 if done or not failures else EXIT_BAD_INPUT


def _print_result(outcome: ConvertResult) -> None:
    print(f"{outcome.source}: {outcome.fmt}, {outcome.events_read:,} events read, "
          f"{outcome.events_accepted:,} accepted ({outcome.seconds:.1f} s)", flush=True)


def _summary(done: list[ConvertResult], failures: list[Failure]) -> None:
    read = sum(r.events_read for r in done)
    accepted = sum(r.events_accepted for r in done)
    print(f"converted {len(done)} of {len(done) + len(failures)} input(s): {read:,} events read, "
          f"{accepted:,} accepted" + (f"; wrote {', '.join(str(r.out) for r in done)}" if done else ""))
    for failure in failures:
        print(f"error: {failure.error()}", file=sys.stderr)
    if failures:
        print(f"skipped {len(failures)} bad input(s)", file=sys.stderr)
