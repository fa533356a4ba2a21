"""Per-GPU throughput of the on-the-fly pipeline under `accelerate launch` with 1, 2, 4, ... N processes.

    python -m benchmarks.ddp_scaling --shards DIR --out FILE.json [--steps S] [--warmup K]
        (one rank; run under `accelerate launch`, as `scaling_records` does)

Each rank reads its own part of the shards (engine loader, one worker), draws small_cnn's 64 px
images on its GPU and takes DDP training steps; rank 0 writes every rank's images/s. Records
(written by benchmarks/pipelines.py): ddp_images_per_s_per_gpu and ddp_scaling_efficiency (per-GPU
rate over the one-process rate) per process count. Needs two or more GPUs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import ROOT, record, skip, timed_steps
from engine.data.loader import LoaderConfig, make_loader
from engine.models import create_model
from engine.render import render_events
from kernels.presets import preset

MODEL, SIZE_PX, BATCH_PER_GPU = "small_cnn", 64, 512


def scaling_records(root: Path, warmup: int, steps: int, folder: Path) -> tuple[list[dict], list[dict]]:
    """(records, skips): one launch per process count; a skip row on machines with < 2 GPUs."""
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return [], [skip("ddp_images_per_s_per_gpu", f"needs 2 or more GPUs; this machine has {gpus}",
                         pipeline="onthefly", model=MODEL)]
    records, base = [], None
    for n in sorted({k for k in (1, 2, 4, 8, 16) if k <= gpus} | {gpus}):
        out = folder / f"scaling-{n}.json"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n),
               "--mixed_precision", "bf16", *(["--multi_gpu"] if n > 1 else []),
               "--module", "benchmarks.ddp_scaling",
               "--shards", str(root), "--steps", str(steps), "--warmup", str(warmup), "--out", str(out)]
        subprocess.run(cmd, cwd=ROOT, check=True)
        per_gpu = float(np.mean(json.loads(out.read_text())["images_per_s"]))
        base = base or per_gpu
        params = {"pipeline": "onthefly", "model": MODEL, "size_px": SIZE_PX, "processes": n,
                  "batch_per_gpu": BATCH_PER_GPU, "workers_per_process": 1,
                  "device": torch.cuda.get_device_name(0)}
        records += [record("ddp_images_per_s_per_gpu", per_gpu, "images/s", **params),
                    record("ddp_scaling_efficiency", per_gpu / base, "ratio", **params)]
    return records, []


def batches(loader, device, dtype):
    """Endless (images, labels) on the device: the rank's batches drawn by the engine renderer."""
    cfg, out, epoch = preset("madrazo2017", SIZE_PX), None, 0
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            out = render_events(batch, cfg, out, dtype=dtype, channels_last=True).images
            yield out, batch["labels"]
        epoch += 1


def child(args) -> int:
    """One rank: DDP training steps on this rank's part of the shards; rank 0 writes the rates."""
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    cfg = LoaderConfig(batch_size=args.batch, workers=1, drop_last=True, seed=0)
    loader = make_loader(args.shards, cfg, accelerator.process_index, accelerator.num_processes, split="train")
    model = create_model(MODEL, len(loader.data.manifest["class_names"])).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)

    def step(batch):
        with accelerator.autocast():
            loss = F.cross_entropy(model(batch[0]).float(), batch[1])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    stream = batches(loader, device, dtype)
    (seconds,) = timed_steps(stream, step, args.warmup, args.steps, device)
    stream.close()
    rate = torch.tensor([args.steps * cfg.batch_size / seconds], device=device)
    rates = accelerator.gather(rate).tolist()
    if accelerator.is_main_process:
        Path(args.out).write_text(json.dumps({"images_per_s": rates}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, type=Path, help="event shard root")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the per-rank rates")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=BATCH_PER_GPU, help="events per GPU per step")
    return child(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
