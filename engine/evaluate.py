"""Evaluate and apply trained models on a shard split.

    python -m engine evaluate --checkpoint runs/NAME --shards SHARDS --out DIR
    python -m engine predict  --checkpoint runs/NAME --shards SHARDS --out DIR

`evaluate` writes metrics.json (accuracy, per-class efficiency, confusion matrix, one-vs-rest ROC
AUC, F1, signal-vs-background efficiency on a 50/50 sample) and PNG plots. `predict` writes
per-event scores to predictions.parquet and plots the dimuon mass of each predicted class on a
pseudo-data mixture in which every class is weighted by its visible cross-section
(generator cross-section x acceptance, from the shards' provenance).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import yaml

from engine.data import objects
from engine.data.parquet_io import atomic_path
from engine.errors import InputError
from engine.training import plots
from engine.training.metrics import classification_metrics


@dataclass
class Trained:
    """A trained model and what it was trained on."""

    folder: Path
    config: dict
    run: dict
    model: object
    """torch.nn.Module, or a fitted scikit-learn classifier for `gbt`."""

    @property
    def class_names(self) -> list[str]:
        return self.run["class_names"]


def load_trained(checkpoint: str | Path) -> Trained:
    """A training output folder (or its model.safetensors / gbt.pkl file)."""
    path = Path(checkpoint)
    folder = path.parent if path.is_file() else path
    if not (folder / "run.json").is_file() or not (folder / "config.yaml").is_file():
        raise InputError(checkpoint, "not a training output (no run.json / config.yaml beside it)")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    run = json.loads((folder / "run.json").read_text())
    name = config["model"]["name"]
    if name == "gbt":
        return Trained(folder, config, run, pickle.loads((folder / "gbt.pkl").read_bytes()))
    from engine.models import create_model
    from engine.models.transfer import load_checkpoint
    model = create_model(name, len(run["class_names"]), **config["model"]["options"])
    load_checkpoint(model, folder / "model.safetensors")
    return Trained(folder, config, run, model.eval())


def check_classes(trained: Trained, manifest: dict, shards: str | Path) -> None:
    if manifest["class_names"] != trained.class_names or manifest["kind"] != trained.run["dataset_kind"]:
        raise InputError(shards, f"holds {manifest['kind']} of classes {manifest['class_names']}, but the "
                                 f"model in {trained.folder} was trained on {trained.run['dataset_kind']} "
                                 f"of classes {trained.class_names}")


def dimuon_mass(types: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(B,) invariant mass of the two leading muons, NaN for events with fewer than two."""
    is_mu = types == objects.MUON
    order = np.argsort(~is_mu, axis=1, kind="stable")[:, :2]     # first two muon slots (pt order)
    mu = np.take_along_axis(features, order[..., None], axis=1)
    pt, eta, phi, m = (mu[..., i].astype(np.float64) for i in (objects.F_PT, objects.F_ETA,
                                                                objects.F_PHI, objects.F_MASS))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    m2 = e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2
    return np.where(is_mu.sum(axis=1) >= 2, np.sqrt(np.maximum(m2, 0.0)), np.nan)


def score_split(trained: Trained, shards: str | Path, split: str, batch_size: int = 512) -> dict:
    """Scores (E, K), labels, split indices and dimuon masses of every event of a split, in order."""
    from engine.data.loader import LoaderConfig, make_loader
    from engine.data.shards import load_manifest
    manifest = load_manifest(Path(shards))
    check_classes(trained, manifest, shards)
    loader = make_loader(shards, LoaderConfig(batch_size=batch_size, shuffle=False), split=split)
    infer = _gbt_scores if trained.config["model"]["name"] == "gbt" else _torch_scorer(trained, manifest)
    out = {"scores": [], "labels": [], "index": [], "dimuon_mass": []}
    for batch in loader:
        out["scores"].append(infer(trained, batch))
        out["labels"].append(batch["labels"].numpy())
        out["index"].append(batch["index"].numpy())
        if "types" in batch:
            out["dimuon_mass"].append(dimuon_mass(batch["types"].numpy(), batch["features"].numpy()))
    result = {k: np.concatenate(v) for k, v in out.items() if v}
    result["manifest"] = manifest
    return result


def _gbt_scores(trained: Trained, batch: dict) -> np.ndarray:
    from engine.training.gbt import gbt_features
    return trained.model.predict_proba(gbt_features(batch))


def _torch_scorer(trained: Trained, manifest: dict):
    from engine.training.config import RenderSection
    from engine.training.inputs import ModelInputs
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = trained.model.to(device)
    render = RenderSection(**trained.config["render"])
    inputs = ModelInputs(trained.run["input_kind"], manifest["kind"], render, device, seed=0,
                         channels_last=trained.config["model"].get("channels_last", True))
    # the weights are float32: feed float32 (exact from bf16/fp16 images) under the autocast the
    # run trained with, so the numbers are those of the run's own validation
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(trained.config["train"].get("mixed_precision"))

    def scores(_, batch):
        args, _labels = inputs(batch, epoch=0, step=0, train=False)
        args = tuple(a.float() if a.is_floating_point() else a for a in args)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            return model(*args).float().softmax(-1).cpu().numpy()
    return scores


def evaluate(checkpoint: str | Path, shards: str | Path, out: str | Path, split: str = "test",
             signal: str | None = None) -> dict:
    """metrics.json and plots for one model on one split."""
    trained = load_trained(checkpoint)
    names = trained.class_names
    signal = signal or trained.config["data"].get("signal") or names[0]
    if signal not in names:
        raise InputError("--signal", f"{signal!r} is not one of the classes {names}")
    res = score_split(trained, shards, split)
    metrics = classification_metrics(res["scores"], res["labels"], names, signal)
    metrics.update(model=trained.config["model"]["name"], checkpoint=str(trained.folder), split=split,
                   train_seconds=trained.run.get("train_seconds"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    plots.confusion(np.array(metrics["confusion_matrix"]), names, out / "confusion.png")
    plots.roc(res["scores"], res["labels"], names, out / "roc.png")
    plots.score_distributions(res["scores"], res["labels"], names, names.index(signal), out / "scores.png")
    if (trained.folder / "log.csv").is_file():
        from engine.training.logs import read_log
        plots.training_curves(read_log(trained.folder / "log.csv"), out / "training.png")
    return metrics


def visible_cross_sections(manifest: dict) -> dict[str, float]:
    """Per class: generator cross-section x acceptance (pb), summed over that class's inputs; 1 where
    the inputs carry no cross-section (converted files)."""
    sigma: dict[str, float] = {}
    for item in manifest.get("inputs", []):
        meta = item.get("engine", {})
        prov = meta.get("provenance", {})
        xs, gen, acc = prov.get("cross_section_pb"), prov.get("generated"), prov.get("accepted")
        for name in meta.get("class_names", []):
            value = xs * acc / gen if xs and gen and acc else 1.0
            sigma[name] = sigma.get(name, 0.0) + value
    return sigma


def predict(checkpoint: str | Path, shards: str | Path, out: str | Path, split: str = "test") -> Path:
    """predictions.parquet (index, label, predicted, score_<class>, dimuon_mass, weight) + mass plot."""
    trained = load_trained(checkpoint)
    names = trained.class_names
    res = score_split(trained, shards, split)
    predicted = res["scores"].argmax(axis=1)
    sigma = visible_cross_sections(res["manifest"])
    counts = np.bincount(res["labels"], minlength=len(names))
    per_event = np.array([sigma.get(n, 1.0) / max(c, 1) for n, c in zip(names, counts)])
    weight = per_event[res["labels"]]
    columns = {"index": res["index"], "label": res["labels"].astype(np.int32),
               "predicted": predicted.astype(np.int32), "weight": weight.astype(np.float32)}
    columns.update({f"score_{n}": res["scores"][:, i].astype(np.float32) for i, n in enumerate(names)})
    mass = res.get("dimuon_mass", np.full(len(predicted), np.nan))
    columns["dimuon_mass"] = mass.astype(np.float32)
    out = Path(out)
    table = pa.table(columns).replace_schema_metadata({"engine": json.dumps(
        {"class_names": names, "checkpoint": str(trained.folder), "split": split,
         "visible_cross_section_pb": sigma})})
    import pyarrow.parquet as pq
    with atomic_path(out / "predictions.parquet") as tmp:
        pq.write_table(table, tmp)
    plots.mass_per_class(mass, predicted, weight, names, out / "dimuon_mass.png")
    return out / "predictions.parquet"
