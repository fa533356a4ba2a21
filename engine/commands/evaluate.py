"""`python -m engine evaluate --checkpoint DIR --shards DIR --out DIR`: metrics.json and plots."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a training output folder or its model.safetensors")
    parser.add_argument("--shards", required=True, help="shard folder (made by `shard`)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and the plots")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--signal", help="signal class of the signal-vs-background figure")


def run(args) -> int:
    from engine.evaluate import evaluate
    m = evaluate(args.checkpoint, args.shards, args.out, args.split, args.signal)
    print(f"{m['model']} on {m['events']} {args.split} events: accuracy {m['accuracy']:.4f}; "
          f"{m['signal']} vs rest (50/50) {m['signal_vs_background_efficiency']:.4f}; "
          f"AUC {', '.join(f'{k} {v:.4f}' for k, v in m['roc_auc_one_vs_rest'].items())}")
    print(f"wrote {args.out}/metrics.json and plots (confusion.png, roc.png, scores.png, training.png)")
    return 0
