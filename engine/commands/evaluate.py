"""`python -m engine evaluate --checkpoint DIR --shards DIR --out DIR`: metrics.json and plots."""
from __future__ import annotations

SHARDS_HELP = "shard folder (made by `shard`) or one of its split folders (e.g. SHARDS/test)"
SPLIT_HELP = "split to use when --shards is the shard root (default: test; a split folder is its own split)"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a training output folder or its model.safetensors")
    parser.add_argument("--shards", required=True, help=SHARDS_HELP)
    parser.add_argument("--out", required=True, help="folder for metrics.json and the plots")
    parser.add_argument("--split", choices=("train", "val", "test"), help=SPLIT_HELP)
    parser.add_argument("--signal", help="signal class of the signal-vs-background figures "
                                         "(default: the run's data.signal, else the first class)")


def run(args) -> int:
    from engine.evaluate import evaluate
    m = evaluate(args.checkpoint, args.shards, args.out, args.split, args.signal)
    rejection = ", ".join(f"{r:.1f} at {e}" if r else f"> {m['background_events']} at {e}"
                          for e, r in m["background_rejection_at_signal_efficiency"].items())
    print(f"{m['model']} on {m['events']} {m['split']} events: accuracy {m['accuracy']:.4f}; "
          f"{m['signal']} vs rest (50/50) {m['signal_vs_background_efficiency']:.4f}; "
          f"AUC {', '.join(f'{k} {v:.4f}' for k, v in m['roc_auc_one_vs_rest'].items())}; "
          f"{m['signal']} background rejection {rejection} signal efficiency")
    print(f"wrote {', '.join(m['written'])} in {args.out}")
    return 0
