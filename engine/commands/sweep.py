"""`python -m engine sweep FILE.sweep.yaml [--dry-run] [--launcher CMD]`: a grid of training runs."""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="a sweep file (configs/*.sweep.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their overrides only")
    parser.add_argument("--launcher", default=sys.executable,
                        help="how each run starts, e.g. 'accelerate launch' (default: this python)")


def run(args) -> int:
    from engine.sweep import run_sweep
    table = run_sweep(args.sweep, args.launcher, args.dry_run)
    if not args.dry_run:
        print(f"wrote {table}")
    return 0
