"""Data layer: events in (Pythia, ROOT, JSON) -> canonical Parquet -> shards -> loader batches."""
