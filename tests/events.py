"""Small, seeded synthetic event records for tests (not physics: shapes and ranges only)."""
from __future__ import annotations

import awkward as ak
import numpy as np


def _objects(rng: np.random.Generator, counts: np.ndarray, mass: float, jets: bool) -> ak.Array:
    n = int(counts.sum())
    fields = {
        "pt": rng.uniform(5.0, 200.0, n).astype(np.float32),
        "eta": rng.uniform(-2.8, 2.8, n).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "mass": np.full(n, mass, np.float32) if not jets else rng.uniform(2, 20, n).astype(np.float32),
    }
    if jets:
        fields["btag"] = rng.uniform(0, 1, n).astype(np.float32)
        fields["btagged"] = fields["btag"] > 0.679
    else:
        fields["charge"] = rng.choice(np.array([-1, 1], np.int8), n)
    return ak.unflatten(ak.zip(fields), counts)


def synthetic_events(n: int, seed: int = 0) -> ak.Array:
    """`n` event records with 0-2 electrons, 0-2 muons, 0-7 jets, MET."""
    rng = np.random.default_rng(seed)
    return ak.zip({
        "weight": np.ones(n, np.float32),
        "run": np.ones(n, np.int64),
        "lumi": np.ones(n, np.int64),
        "event": np.arange(n, dtype=np.int64),
        "met_pt": rng.exponential(40.0, n).astype(np.float32),
        "met_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        "electrons": _objects(rng, rng.integers(0, 3, n), 0.000511, jets=False),
        "muons": _objects(rng, rng.integers(0, 3, n), 0.10566, jets=False),
        "jets": _objects(rng, rng.integers(0, 8, n), 0.0, jets=True),
    }, depth_limit=1)


def synthetic_shards(folder, n_per_class: int, seed: int, kind: str = "events", shard_seed: int | None = None,
                     **options):
    """Seeded synthetic Parquet (engine.data.generation.synthetic) sharded into `folder`/shards (shuffled with
    `shard_seed`, default `seed`; `options` go to ShardOptions); returns that path."""
    from pathlib import Path

    from engine.data.generation.synthetic import write_synthetic
    from engine.data.shards import ShardOptions, write_shards
    folder = Path(folder)
    write_synthetic(folder / "parquet", kind, n_per_class=n_per_class, seed=seed)
    seed_of_shards = seed if shard_seed is None else shard_seed
    write_shards([folder / "parquet"], folder / "shards", ShardOptions(seed=seed_of_shards, **options))
    return folder / "shards"


def reset_accelerate() -> None:
    """Forget Accelerate's process-wide state, so the next Accelerator in this process may choose
    another mixed precision (one training run after another in a test)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
