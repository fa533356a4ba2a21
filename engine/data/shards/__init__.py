"""Shards: canonical Parquet -> WebDataset tar shards per split (write side) and their checked
reading (read side); the blocks inside are engine.data.shards.encoding, the loader reads them.

Layout of a shard folder:
  manifest.json                 see engine.data.shards.writer.build_manifest
  train/train-00000.tar         WebDataset tar: members 000000.blk, 000001.blk, ... each one block
  train/train-00000.idx         of `events_per_member` events (engine.data.shards.encoding); index in
  train/identity.parquet        the format of DALI's wds2idx ("v1.2 N", then "blk OFFSET SIZE NAME");
  val/...  test/...             identity: run, lumi, event of each event, by split-wide index
"""
from engine.data.shards.external import write_shards
from engine.data.shards.inputs import read_inputs
from engine.data.shards.manifest import MANIFEST, SPLITS
from engine.data.shards.reader import (is_shard_path, load_manifest, locate_split, open_split,
                                       read_identity)
from engine.data.shards.writer import ShardOptions

__all__ = ["MANIFEST", "SPLITS", "ShardOptions", "is_shard_path", "load_manifest", "locate_split",
           "open_split", "read_identity", "read_inputs", "write_shards"]
