"""`python -m engine predict --checkpoint DIR --shards DIR --out DIR`: per-event scores to Parquet
and the dimuon mass per predicted class on a cross-section-weighted pseudo-data mixture."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a training output folder or its model.safetensors")
    parser.add_argument("--shards", required=True, help="shard folder (made by `shard`)")
    parser.add_argument("--out", required=True, help="folder for predictions.parquet and dimuon_mass.png")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))


def run(args) -> int:
    from engine.evaluate import predict
    path = predict(args.checkpoint, args.shards, args.out, args.split)
    print(f"wrote {path} and {path.parent}/dimuon_mass.png")
    return 0
