"""Events in: Pythia generation (in worker processes), the detector response and the physics
processes, written as canonical Parquet; nothing here reads shards or knows of training."""
