"""`python -m engine inspect PATH [--json]`: summarise a Parquet file/folder or a shard folder."""
from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("path", help="a Parquet file, a folder of Parquet files, or a shard folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _is_shard_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() or (path.parent / "manifest.json").is_file() \
        or any(path.glob("*.tar"))


def run(args) -> int:
    path = Path(args.path)
    if path.is_dir() and _is_shard_dir(path):
        from engine.data.shard_inspect import format_inspection, inspect_shards
        summary = inspect_shards(path)
        text = format_inspection(summary)
    else:
        from engine.data.summary import format_summary, summarize
        summary = summarize(path)
        text = format_summary(summary)
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else text)
    return 0
