"""`python -m engine inspect PATH [--json]`: summarise a Parquet file/folder or a shard folder.

The summary goes to stdout (as JSON with --json). A shard folder whose data disagrees with its
manifest also prints one line per problem on stderr ("error: FILE: problem") and exits with 2.
"""
from __future__ import annotations

import json
import sys

from engine.errors import EXIT_BAD_INPUT, InputError


def add_arguments(parser) -> None:
    parser.add_argument("path", help="a Parquet file, a folder of Parquet files, or a shard folder "
                                         "(local, or a URL: s3://, root://, https://)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    from engine.data.remote import URL, location
    path = location(args.path)
    problems = []
    from engine.data.shards import is_shard_path
    if is_shard_path(path):
        from engine.data.shards.inspect import format_inspection, inspect_shards
        summary = inspect_shards(path)
        text, problems = format_inspection(summary), summary["problems"]
    elif isinstance(path, URL):
        raise InputError(path, "no shard folder here (only shard folders are read from a URL)")
    else:
        from engine.data.canonical.summary import format_summary, summarize
        summary = summarize(path)
        text = format_summary(summary)
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else text)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT if problems else 0
