"""The baseline that is not a neural network: gradient-boosted trees on per-event features.

Features by the shards' kind, from the same batches the networks read, so every model is compared
on the same test events:
  events   for each of the `cap` padded slots, the type code and (pt, eta, phi, mass, btag,
           charge), flattened;
  fatjets  the jet-level features of `engine.data.substructure.jet_features` (jet pt, eta, mass,
           constituents, tau21, tau32, D2, pt fractions of the 4 hardest constituents).
scikit-learn's HistGradientBoostingClassifier; the fitted model is pickled to OUTPUT_DIR/gbt.pkl, and
run.json gives the fit's `train_seconds` and the `feature_seconds` of reading the training events
into features.
A finished run of the same config started again changes nothing.
"""
from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import yaml

from engine.files import atomic_path


FEATURE_KEYS = ("types", "features", "constituents", "counts", "fatjet")
"""The batch entries the features are computed from."""


def gbt_features(batch: dict) -> np.ndarray:
    """Features of a batch (torch CPU tensors or numpy arrays): of fat jets (a batch with
    constituents) (B, 11) float32, the jet features of `engine.data.substructure`; of events
    (B, N * 7) float32, per slot the type code and the six object features."""
    if "constituents" in batch:
        from engine.data.substructure import jet_features
        return jet_features(*(np.asarray(batch[k]) for k in ("constituents", "counts", "fatjet")))
    types = np.asarray(batch["types"]).astype(np.float32)[..., None]
    return np.concatenate([types, np.asarray(batch["features"])], axis=-1).reshape(len(types), -1)


CHUNK_EVENTS = 65_536
"""Events whose features are computed together: enough for the substructure sums to go fast on
many jets at a time, few enough to bound the memory of their temporaries."""


def collect(loader) -> tuple[np.ndarray, np.ndarray]:
    """All events of a loader as (features, labels), the features computed per chunk of about
    CHUNK_EVENTS events (each event's features depend on that event alone)."""
    features, labels, pending, held = [], [], {}, 0
    for batch in loader:
        for key in FEATURE_KEYS:
            if key in batch:
                pending.setdefault(key, []).append(batch[key].numpy())
        labels.append(batch["labels"].numpy())
        held += len(labels[-1])
        if held >= CHUNK_EVENTS:
            features.append(gbt_features({k: np.concatenate(v) for k, v in pending.items()}))
            pending, held = {}, 0
    if held:
        features.append(gbt_features({k: np.concatenate(v) for k, v in pending.items()}))
    return np.concatenate(features), np.concatenate(labels)


def _finished_run(cfg, config: dict) -> dict | None:
    """The validation metrics of a finished run of this very config in OUTPUT_DIR, else None."""
    out = Path(cfg.output_dir)
    if not all((out / name).is_file() for name in ("gbt.pkl", "config.yaml", "run.json")):
        return None
    if (out / "config.yaml").read_text() != yaml.safe_dump(config, sort_keys=False):
        return None
    try:
        return json.loads((out / "run.json").read_text())["val"]
    except (ValueError, KeyError, TypeError):
        return None


def train_gbt(cfg) -> dict:
    """Fit on the train split (one process), report validation metrics, save gbt.pkl."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from engine.config import to_dict
    from engine.data.shards import load_manifest
    from engine.training.data import make_loaders
    from engine.training.checkpoint import write_run_info
    from engine.training.metrics import classification_metrics

    finished = _finished_run(cfg, to_dict(cfg))
    if finished is not None:
        print(f"gbt: {cfg.output_dir} is finished with this config; nothing to do")
        return finished
    manifest = load_manifest(cfg.data.shards)
    train_loader, val_loader = make_loaders(cfg, 0, 1)
    tic = time.perf_counter()
    x, y = collect(train_loader)      # already limited to data.train_fraction of the events
    feature_seconds = time.perf_counter() - tic
    options = {"max_iter": 300, "learning_rate": 0.1, "early_stopping": True, **cfg.model.options}
    tic = time.perf_counter()
    model = HistGradientBoostingClassifier(random_state=cfg.train.seed, **options).fit(x, y)
    seconds = time.perf_counter() - tic
    xv, yv = collect(val_loader)
    names = manifest["class_names"]
    metrics = classification_metrics(model.predict_proba(xv), yv, names, cfg.data.signal or names[0])
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "gbt.pkl") as tmp:
        tmp.write_bytes(pickle.dumps(model))
    input_kind = "constituents" if manifest["kind"] == "fatjets" else "objects"
    run = {"class_names": names, "dataset_kind": manifest["kind"], "input_kind": input_kind,
           "train_seconds": seconds, "feature_seconds": feature_seconds, "events": len(y), "val": metrics}
    write_run_info(out, to_dict(cfg), run)
    print(f"gbt: {len(y)} training events read in {feature_seconds:.1f} s, fitted in {seconds:.1f} s; "
          f"val accuracy {metrics['accuracy']:.4f}, {metrics['signal']} vs rest "
          f"{metrics['signal_vs_background_efficiency']:.4f}; wrote {out}/gbt.pkl")
    return metrics
