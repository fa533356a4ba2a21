"""`python -m engine predict --checkpoint DIR --shards DIR --out DIR`: per-event scores with each
event's (run, lumi, event) to Parquet, and a mass variable per predicted class on a
cross-section-weighted pseudo-data mixture."""
from __future__ import annotations

from engine.commands.evaluate import SHARDS_HELP, SPLIT_HELP


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a training output folder or its model.safetensors")
    parser.add_argument("--shards", required=True, help=SHARDS_HELP)
    parser.add_argument("--out", required=True, help="folder for predictions.parquet and the mass plot")
    parser.add_argument("--split", choices=("train", "val", "test"), help=SPLIT_HELP)


def run(args) -> int:
    from engine.evaluate import predict
    files = predict(args.checkpoint, args.shards, args.out, args.split)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
