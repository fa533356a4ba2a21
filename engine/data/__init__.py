"""Data layer, by stage and in the order the data flows: events in (`generation`) or `conversion`
-> the `canonical` Parquet format -> `shards` -> the `loader`'s batches. `objects` is the padded
layout shared by shards, loader, renderers and set models; `kinematics` is physics on it."""
