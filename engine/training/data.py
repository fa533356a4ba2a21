"""The training data: train and validation loaders over a shard root, as the config's `data` and
`loader` sections say (used by every trainer, the network loop and the gradient-boosted trees)."""
from __future__ import annotations

from dataclasses import replace

from engine.training.config import TrainConfig


def make_loaders(cfg: TrainConfig, rank: int, world: int):
    """Train and validation loaders of process `rank` of `world` (only `cfg.data` and `cfg.loader`
    are read). `data.train_fraction` keeps a fixed subset of the training events (the first
    fraction of the globally shuffled split), the same in every epoch."""
    from engine.data.loader import make_loader
    from engine.data.remote import location
    from engine.data.shards import load_manifest
    root = location(cfg.data.shards)
    loader_cfg = cfg.loader
    if cfg.data.train_fraction < 1.0:
        total = load_manifest(root)["splits"]["train"]["events"]
        loader_cfg = replace(loader_cfg, max_events=max(1, round(total * cfg.data.train_fraction)))
    train = make_loader(root, loader_cfg, rank, world, split="train")
    evaluation = replace(cfg.loader, shuffle=False, drop_last=False)
    return train, make_loader(root, evaluation, rank, world, split="val")
