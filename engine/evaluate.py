"""Evaluate and apply trained models on a shard split.

    python -m engine evaluate --checkpoint runs/NAME --shards SHARDS[/SPLIT] --out DIR
    python -m engine predict  --checkpoint runs/NAME --shards SHARDS[/SPLIT] --out DIR

`evaluate` writes metrics.json (accuracy, per-class efficiency, confusion matrix, one-vs-rest ROC
AUC, F1, signal-vs-background efficiency on a 50/50 sample, background rejection at fixed signal
efficiencies; for fat jets also the same in soft-drop mass windows and the mass-sculpting check of
engine.jet_metrics) and PNG plots. `predict` writes per-event scores with each event's (run, lumi, event)
to predictions.parquet and plots a mass variable of each predicted class on a pseudo-data mixture in
which every class is weighted by its visible cross-section (generator cross-section x acceptance,
from the shards' provenance). Every output file is written atomically.
"""
from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from engine.data import kinematics
from engine.data.shards import locate_split
from engine.errors import InputError
from engine.files import atomic_path
from engine.jet_metrics import DEFAULT_WINDOWS_GEV, jet_mass_metrics, sculpting_edges
from engine.training import plots
from engine.training.config import TrainConfig, load_config
from engine.training.metrics import classification_metrics

WEIGHT_DOC = ("pseudo-data weight [pb]: the event's class visible cross-section (generator cross-section x "
              "acceptance, 1 where the inputs carry none) divided by that class's events in the split, so "
              "each class's weights sum to its visible cross-section")


@dataclass
class Trained:
    """A trained model and what it was trained on."""

    folder: Path
    config: TrainConfig
    run: dict
    model: object
    """torch.nn.Module, or a fitted scikit-learn classifier for `gbt`."""

    @property
    def class_names(self) -> list[str]:
        return self.run["class_names"]

    @property
    def name(self) -> str:
        return self.config.model.name


def load_trained(checkpoint: str | Path) -> Trained:
    """A training output folder (or its model.safetensors / gbt.pkl file); InputError naming the
    file for anything missing or unreadable."""
    path = Path(checkpoint)
    if not path.exists():
        raise InputError(checkpoint, "no such training output")
    folder = path.parent if path.is_file() else path
    for name in ("config.yaml", "run.json"):
        if not (folder / name).is_file():
            raise InputError(folder, f"not a training output (no {name})")
    config, run = _read_config(folder / "config.yaml"), _read_run(folder / "run.json")
    if config.model.name == "gbt":
        return Trained(folder, config, run, _read_gbt(folder / "gbt.pkl"))
    from engine.models import create_model
    from engine.training.weights import load_checkpoint
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InputError(weights, "missing (the training run has not finished: run it again to resume)")
    try:
        model = create_model(config.model.name, len(run["class_names"]), **config.model.options)
    except InputError as exc:
        raise InputError(folder / "config.yaml", f"{exc.source}: {exc.problem}") from None
    load_checkpoint(model, weights)
    return Trained(folder, config, run, model.eval())


def _read_config(path: Path) -> TrainConfig:
    try:
        return load_config(path)
    except InputError as exc:
        problem = exc.problem if exc.source == str(path) else f"{exc.source}: {exc.problem}"
        raise InputError(path, problem) from None


def _read_run(path: Path) -> dict:
    try:
        run = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"unreadable ({exc.__class__.__name__}: not JSON)") from None
    names = run.get("class_names") if isinstance(run, dict) else None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        raise InputError(path, "has no class_names (a list of at least two class names)")
    if not isinstance(run.get("dataset_kind"), str):
        raise InputError(path, "has no dataset_kind")
    return run


def _read_gbt(path: Path):
    if not path.is_file():
        raise InputError(path, "missing (the gbt training run has not finished)")
    try:
        model = pickle.loads(path.read_bytes())
    except Exception as exc:  # a corrupt or foreign pickle can raise almost anything
        raise InputError(path, f"unreadable ({exc.__class__.__name__}; corrupt, or from another "
                               "scikit-learn version)") from None
    if not hasattr(model, "predict_proba"):
        raise InputError(path, f"holds a {type(model).__name__}, not a fitted classifier")
    return model


def check_classes(trained: Trained, manifest: dict, shards: str | Path) -> None:
    if manifest["class_names"] != trained.class_names or manifest["kind"] != trained.run["dataset_kind"]:
        raise InputError(shards, f"holds {manifest['kind']} of classes {manifest['class_names']}, but the "
                                 f"model in {trained.folder} was trained on {trained.run['dataset_kind']} "
                                 f"of classes {trained.class_names}")


def score_split(trained: Trained, root: Path, split: str, batch_size: int = 512) -> dict:
    """Scores (E, K), labels, split indices, and for events the lepton counts and mass variables
    (kinematics.VARIABLES), for fat jets their mass, msoftdrop and parton, of every event of a
    split, in stored order."""
    from engine.data.loader import LoaderConfig, make_loader
    from engine.data.shards import load_manifest
    manifest = load_manifest(root)
    check_classes(trained, manifest, root)
    loader = make_loader(root, LoaderConfig(batch_size=batch_size, shuffle=False), split=split)
    infer = _gbt_scores if trained.name == "gbt" else _torch_scorer(trained, manifest)
    out: dict[str, list] = {"scores": [], "labels": [], "index": [], "n_leptons": [], "msoftdrop": [],
                            "parton": [], kinematics.FATJET_MASS[0]: [],
                            **{v: [] for v in kinematics.VARIABLES}}
    for batch in loader:
        out["scores"].append(infer(trained, batch))
        out["labels"].append(batch["labels"].numpy())
        out["index"].append(batch["index"].numpy())
        if "types" in batch:
            types, feats = batch["types"].numpy(), batch["features"].numpy()
            out["n_leptons"].append(kinematics.lepton_counts(types))
            for v in kinematics.VARIABLES:
                out[v].append(kinematics.compute(v, types, feats))
        if "fatjet" in batch:
            out[kinematics.FATJET_MASS[0]].append(batch["fatjet"].numpy()[:, 3].astype(np.float64))
            out["msoftdrop"].append(batch["msoftdrop"].numpy())
            out["parton"].append(batch["parton"].numpy())
    result = {k: np.concatenate(v) for k, v in out.items() if v}
    if "scores" not in result:
        raise InputError(root / split, "the split has no events")
    result["manifest"] = manifest
    return result


def _gbt_scores(trained: Trained, batch: dict) -> np.ndarray:
    from engine.training.gbt import gbt_features
    return trained.model.predict_proba(gbt_features(batch))


def _torch_scorer(trained: Trained, manifest: dict):
    from engine.training.inputs import ModelInputs
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = trained.model.to(device)
    cfg = trained.config
    inputs = ModelInputs(trained.run["input_kind"], manifest["kind"], cfg.render, device, seed=0,
                         channels_last=cfg.model.channels_last)
    # the weights are float32: feed float32 (exact from bf16/fp16 images) under the autocast the
    # run trained with, so the numbers are those of the run's own validation
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)

    def scores(_, batch):
        args, _labels = inputs(batch, epoch=0, step=0, train=False)
        args = tuple(a.float() if a.is_floating_point() else a for a in args)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            return model(*args).float().softmax(-1).cpu().numpy()
    return scores


def plot_title(model: str, split: str, events: int) -> str:
    return f"{model} on the {split} split, {events:,} events"


def evaluate(checkpoint: str | Path, shards: str | Path, out: str | Path, split: str | None = None,
             signal: str | None = None, mass_windows: tuple[float, ...] = DEFAULT_WINDOWS_GEV) -> dict:
    """metrics.json and plots for one model on one split (`shards`: the root or a split folder);
    for fat jets also the metrics in the soft-drop mass windows of edges `mass_windows` (GeV) and
    the mass-sculpting check. metrics["written"] lists the files written."""
    trained = load_trained(checkpoint)
    names = trained.class_names
    signal = signal or trained.config.data.signal or names[0]
    if signal not in names:
        raise InputError("--signal", f"{signal!r} is not one of the classes {names}")
    root, split = locate_split(shards, split, default="test")
    res = score_split(trained, root, split)
    metrics = classification_metrics(res["scores"], res["labels"], names, signal)
    if "msoftdrop" in res:
        metrics.update(jet_mass_metrics(res["scores"], res["labels"], res["msoftdrop"], names.index(signal),
                                        mass_windows))
    metrics.update(model=trained.name, checkpoint=str(trained.folder), split=split,
                   train_seconds=trained.run.get("train_seconds"))
    out = Path(out)
    written = _evaluation_plots(trained, res, metrics, out)
    with atomic_path(out / "metrics.json") as tmp:      # last: its presence means the evaluation is complete
        tmp.write_text(json.dumps(metrics, indent=1))
    metrics["written"] = ["metrics.json", *written]
    return metrics


def _evaluation_plots(trained: Trained, res: dict, metrics: dict, out: Path) -> list[str]:
    names, title = trained.class_names, plot_title(trained.name, metrics["split"], metrics["events"])
    plots.confusion(np.array(metrics["confusion_matrix"]), names, out / "confusion.png", title)
    plots.roc(res["scores"], res["labels"], names, out / "roc.png", title)
    plots.score_distributions(res["scores"], res["labels"], names, names.index(metrics["signal"]),
                              out / "scores.png", title)
    written = ["confusion.png", "roc.png", "scores.png"]
    written += _sculpting_plot(res, metrics, names, out, title)
    log = trained.folder / "log.csv"
    if log.is_file():
        from engine.training.logs import read_log
        rows = read_log(log)
        if rows:
            val = trained.run.get("val") or {}
            events = f", validation on {val['events']:,} val events" if "events" in val else ""
            plots.training_curves(rows, out / "training.png", f"{trained.name} training{events}")
            written.append("training.png")
    return written


def _sculpting_plot(res: dict, metrics: dict, names: list[str], out: Path, title: str) -> list[str]:
    """msoftdrop.png: the background's soft-drop mass before / after the eps_S = 0.5 cut (fat jets)."""
    sculpt = metrics.get("mass_sculpting")
    if not sculpt or sculpt["score_threshold"] is None:
        return []
    known, s = ~np.isnan(res["msoftdrop"]), names.index(metrics["signal"])
    passing = res["scores"][known, s] >= sculpt["score_threshold"]
    plots.mass_sculpting(res["msoftdrop"][known], res["labels"][known] == s, passing, sculpting_edges(),
                         sculpt["signal_efficiency"], sculpt["jsd"], out / "msoftdrop.png", title)
    return ["msoftdrop.png"]


def visible_cross_sections(manifest: dict) -> dict[str, float]:
    """Per class: generator cross-section x acceptance (pb), summed over that class's inputs; 1 for
    a class whose inputs carry no cross-section (converted files)."""
    sigma: dict[str, float] = {}
    for item in manifest.get("inputs", []):
        meta = item.get("engine", {})
        prov = meta.get("provenance", {})
        xs, gen, acc = prov.get("cross_section_pb"), prov.get("generated"), prov.get("accepted")
        if xs and gen and acc:
            for name in meta.get("class_names", []):
                sigma[name] = sigma.get(name, 0.0) + xs * acc / gen
    return {name: sigma.get(name, 1.0) for name in manifest["class_names"]}


def event_identity(root: Path, split: str, index: np.ndarray) -> dict[str, np.ndarray]:
    """run, lumi, event of the events at `index` from the split's identity sidecar; {} (with one
    warning on stderr) for shards written without one."""
    from engine.data.shards import read_identity
    ids = read_identity(root, split)
    if ids is None:
        print(f"warning: {root / split}: the shards carry no event identity (written before splits had "
              "identity.parquet); writing without run, lumi, event", file=sys.stderr)
        return {}
    return {c: ids[c][index] for c in ("run", "lumi", "event")}


def predict(checkpoint: str | Path, shards: str | Path, out: str | Path, split: str | None = None) -> list[Path]:
    """predictions.parquet (index, run, lumi, event, label, predicted, score_<class>, the mass
    variable, for fat jets msoftdrop and parton, weight) and a plot of the mass variable per
    predicted class; returns the files."""
    trained = load_trained(checkpoint)
    names = trained.class_names
    root, split = locate_split(shards, split, default="test")
    res = score_split(trained, root, split)
    predicted = res["scores"].argmax(axis=1)
    sigma = visible_cross_sections(res["manifest"])
    counts = np.bincount(res["labels"], minlength=len(names))
    weight = np.array([sigma[n] / max(c, 1) for n, c in zip(names, counts)])[res["labels"]]
    columns = {"index": res["index"], **event_identity(root, split, res["index"]),
               "label": res["labels"].astype(np.int32), "predicted": predicted.astype(np.int32)}
    columns.update({f"score_{n}": res["scores"][:, i].astype(np.float32) for i, n in enumerate(names)})
    variable = kinematics.mass_variable(res["n_leptons"]) if "n_leptons" in res else kinematics.FATJET_MASS[0]
    columns[variable] = res[variable].astype(np.float32)
    if "msoftdrop" in res:
        columns.update(msoftdrop=res["msoftdrop"].astype(np.float32), parton=res["parton"].astype(np.int32))
    columns["weight"] = weight.astype(np.float32)
    out = Path(out)
    plot = _mass_plot(res[variable], predicted, weight, names, variable, out,
                      plot_title(trained.name, split, len(predicted)))
    table = _write_predictions(columns, out / "predictions.parquet", {
        "class_names": names, "checkpoint": str(trained.folder), "split": split,
        "visible_cross_section_pb": sigma, "mass_variable": variable, "weight": WEIGHT_DOC})
    return [table, plot]


def _write_predictions(columns: dict, path: Path, meta: dict) -> Path:
    import pyarrow.parquet as pq
    table = pa.table(columns)
    weight = table.schema.get_field_index("weight")
    table = table.set_column(weight, table.schema.field(weight).with_metadata({"description": WEIGHT_DOC}),
                             table.column(weight))
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({"engine": json.dumps(meta)}), tmp)
    return path


def _mass_plot(mass: np.ndarray, predicted: np.ndarray, weight: np.ndarray, names: list[str],
               variable: str, out: Path, title: str) -> Path:
    if not np.isfinite(mass).any():
        print(f"warning: {out / (variable + '.png')}: no event has a {_axis(variable)}; "
              "the plot is empty", file=sys.stderr)
    return plots.mass_per_class(mass, predicted, weight, names, out / f"{variable}.png", _axis(variable), title)


def _axis(variable: str) -> str:
    return dict([kinematics.FATJET_MASS], **kinematics.VARIABLES)[variable]
