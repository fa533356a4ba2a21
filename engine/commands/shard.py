"""`python -m engine shard`: canonical Parquet -> WebDataset shards per split with a manifest."""
from __future__ import annotations

import argparse
import math

from engine.data.shards import ShardOptions, write_shards
from engine.data.tasks import add_executor_arguments, executor_spec
from engine.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="DIR_OR_FILE",
                        help="canonical Parquet files or folders (one per class, or mixed)")
    parser.add_argument("--out", required=True, help="new shard folder (must not exist or be empty)")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions")
    parser.add_argument("--balance", action="store_true", help="downsample classes to the smallest")
    parser.add_argument("--seed", type=int, default=0, help="seed of the global shuffle and split")
    parser.add_argument("--shard-size-mb", type=float, default=128.0, help="target size of one .tar")
    parser.add_argument("--events-per-member", type=int, default=4096,
                        help="events per tar member (one compressed block)")
    parser.add_argument("--codec", default="lz4", choices=("lz4", "zstd", "none"),
                        help="block compression: lz4 (fast) or zstd (smaller)")
    parser.add_argument("--memory-gb", default="2.0",
                        help="memory bound of each process in GB (beyond the interpreter's own): "
                             "sets the number of buckets the events are shuffled through on disk")
    add_executor_arguments(parser)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError("--split", f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise InputError("--split", f"expected three fractions (train,val,test), got {text!r}")
    return values


def _memory_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError("--memory-gb", f"expected a number of GB > 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    memory_gb, executor = _memory_gb(args.memory_gb), executor_spec(args)
    try:
        opts = ShardOptions(split=_fractions(args.split), balance=args.balance, seed=args.seed,
                            shard_size_mb=args.shard_size_mb, events_per_member=args.events_per_member,
                            codec=args.codec, memory_gb=memory_gb)
    except ValueError as exc:
        raise InputError("options", str(exc)) from None
    manifest = write_shards(args.input, args.out, opts, executor, progress=None)
    print(f"{args.out}: {manifest['kind']}, classes {', '.join(manifest['class_names'])}, "
          f"{manifest['bytes_per_event']:.1f} bytes/event, {manifest['buckets']} bucket(s)")
    for name, split in manifest["splits"].items():
        print(f"  {name:5s} {split['events']:>10d} events  {len(split['shards']):>4d} shards  "
              f"per class {split['events_per_class']}")
    return 0
