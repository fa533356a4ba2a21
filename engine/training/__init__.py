"""Training support: configuration, inputs (loader + renderer), checkpoints, metrics, logs."""
