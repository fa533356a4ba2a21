"""`python -m engine demo`: the main job end to end on a built-in default, on CPU or GPU.

Each step is one of the engine's own commands, printed before it runs, so the demo doubles as a
worked example: generate a small sample of each class with Pythia 8, inspect it, shard it, and
draw a contact sheet of event images.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from engine.errors import InputError

CLASSES = ("ttbar", "wjets", "dy")


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")
    parser.add_argument("--events", type=int, default=400, help="accepted events per class")
    parser.add_argument("--workers", type=int, default=2, help="generator processes per class")
    parser.add_argument("--seed", type=int, default=1)


def steps(out: Path, events: int, workers: int, seed: int) -> list[list[str]]:
    """The demo as a list of `python -m engine` argument lists."""
    parquet = out / "parquet"
    plan = [["generate", "--process", name, "--events", str(events), "--out", str(parquet),
             "--seed", str(seed + i), "--workers", str(workers)] for i, name in enumerate(CLASSES)]
    plan += [
        ["inspect", str(parquet)],
        ["shard", "--input", str(parquet), "--out", str(out / "shards"), "--seed", str(seed)],
        ["inspect", str(out / "shards")],
        ["render", "--input", str(parquet / "ttbar.parquet"), "--n", "16", "--preset", "madrazo2017",
         "--format", "png", "--out", str(out / "images")],
    ]
    return plan


def run(args) -> int:
    from engine.__main__ import main
    if args.events <= 0 or args.workers <= 0:
        raise InputError("--events/--workers", "must be positive")
    out = Path(args.out)
    start = time.perf_counter()
    for argv in steps(out, args.events, args.workers, args.seed):
        print(f"\n$ python -m engine {shlex.join(argv)}", flush=True)
        code = main(argv)
        if code:
            return code
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; results in {out}/ "
          f"(parquet/, shards/, images/contact_sheet.png)")
    return 0
