"""`python -m engine convert INPUT... [--files-from LIST] --out DIR --label NAME`: NanoAOD / Delphes /
JSON -> Parquet. An input is a local path or a URL (`root://host//path/file.root`, `s3://bucket/key`,
`https://...`), mixed freely; `--files-from LIST` adds the inputs listed in LIST, one a line.

One output per input, `DIR/<input stem>.parquet`, with process = label = NAME (class_names [NAME]),
each written atomically as its task completes, on the local process pool (`--workers`) or a Dask
cluster (`--executor dask`). Rerunning the same command skips the inputs already converted; an
output written with other settings is refused before any work. `--task-index I --num-tasks T`
converts only the I-th contiguous slice of the inputs (array jobs). `DIR/convert.json`, the
record, is written last by the run that finds every input converted.
Exit codes: 0 when every input of the run was converted, or with --skip-bad when at least one
was; 2 for bad input (one line `error: FILE: problem` per bad input, after the others completed).
"""
from __future__ import annotations

import argparse
import sys

from engine.data.canonical.selection import PRESETS, load_selection
from engine.data.conversion.convert import (DEFAULT_STEP_SIZE, FORMATS, RECORD_NAME, ConvertFailures,
                                            ConvertRun, convert_all, inputs_of, plan_jobs)
from engine.data.tasks import TaskSlice, add_executor_arguments, add_slice_arguments, executor_spec, task_slice
from engine.errors import EXIT_BAD_INPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="ROOT or JSON event files: local paths or URLs (root://, s3://, https://)")
    parser.add_argument("--files-from", action="append", metavar="LIST",
                        help="also convert the inputs listed in LIST, one path or URL a line (blank "
                             "lines and # comments skipped; relative paths are relative to LIST's folder)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the Parquet files")
    parser.add_argument("--label", required=True, metavar="NAME",
                        help="process name of every event (the file's only class)")
    parser.add_argument("--format", default="auto", metavar="FORMAT",
                        help=f"one of {', '.join(FORMATS)} (default: auto, from the file's content)")
    parser.add_argument("--selection", default="madrazo2017", metavar="SEL",
                        help=f"preset ({', '.join(PRESETS)}) or a YAML file (default: madrazo2017)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="go on past inputs that fail the checks, and exit 0 if any converted")
    parser.add_argument("--step-size", type=int, default=DEFAULT_STEP_SIZE, metavar="N",
                        help=f"events read per chunk (default: {DEFAULT_STEP_SIZE:,})")
    add_executor_arguments(parser)
    add_slice_arguments(parser)


def run(args: argparse.Namespace) -> int:
    executor, part = executor_spec(args), task_slice(args)
    selection = load_selection(args.selection)
    inputs = inputs_of(args.inputs, args.files_from or [])
    jobs = plan_jobs(inputs, args.out, args.label, args.format, selection, args.step_size)
    try:
        outcome = convert_all(jobs, args.out, executor, skip_bad=args.skip_bad, part=part, progress=None)
    except ConvertFailures as exc:      # the others completed: report them, then each failure
        outcome = exc.run
    _report(outcome, part, len(jobs), args.skip_bad)
    if outcome.failures and not (args.skip_bad and (outcome.converted or outcome.skipped)):
        return EXIT_BAD_INPUT
    return 0


def _report(outcome: ConvertRun, part: TaskSlice, total: int, skip_bad: bool) -> None:
    for result in outcome.converted:
        print(f"{result.source}: {result.fmt}, {result.events_read:,} events read, "
              f"{result.events_accepted:,} accepted ({result.seconds:.1f} s)")
    for out, problem in outcome.damaged:
        print(f"warning: {out}: did not open ({problem}): converted again", file=sys.stderr)
    done, skipped = outcome.converted, outcome.skipped
    inputs = len(done) + len(skipped) + len(outcome.failures)
    where = "" if part.whole else f" (slice {part.index} of {part.count})"
    print(f"converted {len(done)} of {inputs} input(s){where}, {len(skipped)} skipped as already converted: "
          f"{sum(r.events_read for r in done):,} events read, {sum(r.events_accepted for r in done):,} "
          f"accepted" + (f"; wrote {', '.join(str(r.out) for r in done)}" if done else ""))
    for failure in outcome.failures:
        print(f"error: {failure.error()}", file=sys.stderr)
    if outcome.failures and skip_bad:
        print(f"skipped {len(outcome.failures)} bad input(s)", file=sys.stderr)
    if outcome.record is not None:
        print(f"wrote {outcome.record} ({total} input(s))")
    elif outcome.remaining:
        print(f"{outcome.remaining} of {total} input(s) not converted yet: the converted ones are kept, and "
              f"{RECORD_NAME} is written by the run (or slice) that finds them all converted")
