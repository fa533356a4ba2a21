"""The trainer's GPU path: bf16 autocast, event images drawn by the CUDA kernel into the batch, and a
kill followed by a resume, against the same run uninterrupted.

    python -m benchmarks.train_gpu [--quick] [--rehearse] --out FILE.json

Synthetic ttbar / W+jets / Drell-Yan events (engine.data.generation.synthetic: the rates depend on event sizes,
not on the physics) are sharded, then `python -m engine.train` trains small_cnn on 64 px images
(`render.dtype=bfloat16`, `train.mixed_precision=bf16`) for STEPS optimizer steps, twice: straight
through, and killed with SIGKILL once its second checkpoint is complete, then started again with the
same command. Records: train_gpu_images_per_s (the uninterrupted run's training rate),
train_gpu_val_accuracy, train_gpu_resume_identical (1 when the resumed run's weights equal the
uninterrupted run's bit for bit, else 0) and train_gpu_resume_max_abs_diff.
Without a GPU it writes skip rows, unless `--rehearse`: the same steps on the CPU at tiny sizes, to
check the script itself before a GPU machine is spent on it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, print_table, record, skip, write_results

SIZES = {"gpu": {"per_class": 4000, "steps": 300, "batch": 256, "checkpoint": 100},
         "rehearse": {"per_class": 150, "steps": 24, "batch": 32, "checkpoint": 8}}


def make_shards(work: Path, per_class: int) -> Path:
    from engine.data.generation.synthetic import write_synthetic
    from engine.data.shards import ShardOptions, write_shards
    write_synthetic(work / "parquet", "events", per_class, seed=5)
    write_shards([work / "parquet"], work / "shards", ShardOptions(seed=5, events_per_member=512))
    return work / "shards"


def train_command(shards: Path, out: Path, size: dict, gpu: bool) -> list[str]:
    precision = ["render.dtype=bfloat16", "train.mixed_precision=bf16"] if gpu else []
    return [sys.executable, "-m", "engine.train", f"data.shards={shards}", f"output_dir={out}",
            "model.name=small_cnn", "render.size_px=64" if gpu else "render.size_px=32", *precision,
            f"train.batch_size={size['batch']}", f"train.max_steps={size['steps']}", "train.epochs=1000",
            f"train.checkpoint_every_steps={size['checkpoint']}", "train.log_every_steps=10",
            "train.seed=11", "data.signal=ttbar"]


def run_to_end(cmd: list[str], log: Path) -> None:
    with open(log, "a") as sink:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)


def run_and_kill(cmd: list[str], out: Path, log: Path, after_checkpoints: int, timeout_s: float) -> None:
    """Start training, SIGKILL its process group once `after_checkpoints` checkpoints are complete."""
    with open(log, "a") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while len(list(out.glob("checkpoints/step_*/trainer_state.json"))) < after_checkpoints:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"training ended or stalled before checkpoint {after_checkpoints} (see {log})")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def compare_weights(a: Path, b: Path) -> tuple[bool, float]:
    from safetensors.torch import load_file
    x, y = load_file(a), load_file(b)
    if x.keys() != y.keys():
        return False, float("inf")
    diff = max(float((x[k].float() - y[k].float()).abs().max()) for k in x)
    return all(torch.equal(x[k], y[k]) for k in x), diff


def measure(work: Path, size: dict, gpu: bool) -> list[dict]:
    shards = make_shards(work, size["per_class"])
    log = work / "train.log"
    straight, killed = work / "straight", work / "killed"
    run_to_end(train_command(shards, straight, size, gpu), log)
    run_and_kill(train_command(shards, killed, size, gpu), killed, log, after_checkpoints=2, timeout_s=600)
    run_to_end(train_command(shards, killed, size, gpu), log)
    run = json.loads((straight / "run.json").read_text())
    identical, diff = compare_weights(straight / "model.safetensors", killed / "model.safetensors")
    device = torch.cuda.get_device_name() if gpu else "cpu"
    params = {"model": "small_cnn", "size_px": 64 if gpu else 32, "batch": size["batch"],
              "steps": size["steps"], "dtype": "bfloat16" if gpu else "float32", "device": device,
              "renderer": "cuda" if gpu else "cpu twin"}
    return [record("train_gpu_images_per_s", run["events_per_s"], "images/s", **params),
            record("train_gpu_val_accuracy", run["val"]["accuracy"], "fraction", **params),
            record("train_gpu_resume_identical", int(identical), "bool", killed_after="2 checkpoints", **params),
            record("train_gpu_resume_max_abs_diff", diff, "weight", **params)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all; the same sizes")
    parser.add_argument("--rehearse", action="store_true", help="without a GPU: tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, required=True, help="records JSON file")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    if not gpu and not args.rehearse:
        skips = [skip(name, "no GPU on this machine") for name in
                 ("train_gpu_images_per_s", "train_gpu_resume_identical")]
        write_results(args.out, [], skips)
        print_table([], skips)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            records = measure(Path(tmp), SIZES["gpu" if gpu else "rehearse"], gpu)
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            log = Path(tmp) / "train.log"
            print(log.read_text(errors="replace")[-6000:] if log.exists() else "(no training log)")
            print(f"train_gpu failed: {exc}")
            return 1
    write_results(args.out, records)
    print_table(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
