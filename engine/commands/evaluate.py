"""`python -m engine evaluate --checkpoint DIR --shards DIR --out DIR`: metrics.json and plots."""
from __future__ import annotations

SHARDS_HELP = "shard folder (made by `shard`) or one of its split folders (e.g. SHARDS/test)"
SPLIT_HELP = "split to use when --shards is the shard root (default: test; a split folder is its own split)"
WINDOWS_HELP = ("fat jets: edges of the soft-drop mass windows in GeV, comma-separated, 'inf' for no upper "
                "end (default: 0,50,90,140,inf)")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a training output folder or its model.safetensors")
    parser.add_argument("--shards", required=True, help=SHARDS_HELP)
    parser.add_argument("--out", required=True, help="folder for metrics.json and the plots")
    parser.add_argument("--split", choices=("train", "val", "test"), help=SPLIT_HELP)
    parser.add_argument("--signal", help="signal class of the signal-vs-background figures "
                                         "(default: the run's data.signal, else the first class)")
    parser.add_argument("--mass-windows", default="0,50,90,140,inf", help=WINDOWS_HELP)


def run(args) -> int:
    from engine.errors import InputError
    from engine.evaluate import evaluate
    from engine.jet_metrics import parse_windows
    try:
        windows = parse_windows(args.mass_windows)
    except ValueError as exc:
        raise InputError("--mass-windows", str(exc)) from None
    m = evaluate(args.checkpoint, args.shards, args.out, args.split, args.signal, windows)
    print(f"{m['model']} on {m['events']} {m['split']} events: accuracy {m['accuracy']:.4f}; "
          f"{m['signal']} vs rest (50/50) {m['signal_vs_background_efficiency']:.4f}; "
          f"AUC {', '.join(f'{k} {v:.4f}' for k, v in m['roc_auc_one_vs_rest'].items())}; "
          f"{m['signal']} background rejection {_rejection(m)} signal efficiency")
    for line in _mass_lines(m):
        print(line)
    print(f"wrote {', '.join(m['written'])} in {args.out}")
    return 0


def _rejection(m: dict) -> str:
    counts = m.get("background_events", 0)
    return ", ".join(f"{r:.1f} at {e}" if r else f"> {counts} at {e}"
                     for e, r in m["background_rejection_at_signal_efficiency"].items())


def _mass_lines(m: dict) -> list[str]:
    """The soft-drop mass windows and the sculpting check of a fat-jet evaluation, one line each."""
    lines = []
    if m.get("events_without_msoftdrop"):
        lines.append(f"{m['events_without_msoftdrop']} jets have no soft-drop mass (version-1 inputs): "
                     "left out of the mass windows")
    for name, w in m.get("mass_windows", {}).items():
        lines.append(f"  msoftdrop {name} GeV: {w['signal_events']} {m['signal']} / {w['background_events']} "
                     f"background jets, AUC {w['roc_auc']:.4f}, background rejection "
                     f"{_rejection(w)}; "
                     f"passing the inclusive eps_S = 0.5 cut: {w['signal_passing_inclusive_cut']:.3f} signal, "
                     f"{w['background_passing_inclusive_cut']:.3f} background")
    sculpt = m.get("mass_sculpting")
    if sculpt and sculpt["background_passing"] in (0, sculpt["background_events"]):
        side = "passes" if not sculpt["background_passing"] else "fails"
        lines.append(f"  mass sculpting: no background jet {side} the eps_S = {sculpt['signal_efficiency']} "
                     "cut (JSD undefined)")
    elif sculpt:
        inverse = sculpt["inverse_jsd"]
        inverse_text = "infinite" if inverse is None else f"{inverse:.1f}"
        lines.append(f"  mass sculpting: msoftdrop JSD of the background passing / failing the eps_S = "
                     f"{sculpt['signal_efficiency']} cut {sculpt['jsd']:.4f} (1/JSD {inverse_text}; "
                     f"{sculpt['background_passing']} of {sculpt['background_events']} background jets pass)")
    return lines
