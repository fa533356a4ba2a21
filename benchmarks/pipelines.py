"""End to end: the same events, the same model, four ways of feeding it a training step.

    python -m benchmarks.pipelines [--quick | --tiny] [--parquet DIR | --synthetic] [--models M,...] --out FILE.json

  onthefly  event shards -> engine loader (W workers) -> engine renderer (CUDA kernel on a GPU, the CPU
            twin otherwise) -> model
  png       the same events pre-rendered to PNG files -> torch Dataset decoding with PIL in a
            DataLoader with W workers -> model
  dali      the same images in WebDataset tars (JPEG by default) -> DALI webdataset reader and image
            decoder (device='mixed' on a GPU, 'cpu' otherwise; W = DALI threads, at least 1) -> model
  bound     the model on one batch already in device memory, repeated (the hardware's limit)

Each measurement is a training step (forward, cross-entropy, backward, SGD) per batch, images/s
over a fixed number of steps. For each worker count the pipelines' streams are open together and
measured in rounds, one timing window each in turn (onthefly, png, dali, bound, onthefly, ...),
every window after untimed steps that start the workers and drain the batches the idle pipeline
prefetched; a pipeline's rate is its median window. Drifts in the load of a shared machine then
hit every pipeline alike, and a burst moves one window, not the median.
Models: small_cnn at 64 px (the loader matters most) and ResNet50 at 224 px (bf16 autocast on a
GPU); without a GPU only small_cnn runs unless --models says otherwise, and in its narrow variant
(widths 8-16-32-64: ~2,500 training images/s on 2 cores instead of ~300), so that there too the
model leaves the loader something to matter for; `params` name the widths. Events: --parquet, else
Pythia 8 ttbar / W+jets / Drell-Yan (`python -m engine generate`; synthetic events with --tiny or
--synthetic, for a machine without Pythia: the rates depend on the event sizes, not on the physics).

Records: pipeline_images_per_s {pipeline, model, workers, ...}; onthefly_over_png, onthefly_over_dali,
onthefly_over_bound per worker count and at each pipeline's best ("workers": "best");
workers_to_95pct_best per pipeline; prepare_s and prepare_events_per_s (render every PNG / pack the
DALI tars / write the event shards once); disk_bytes_per_event per format; with several GPUs,
ddp_images_per_s_per_gpu under `accelerate launch` with 1..N processes. Rows that cannot run here
are written to FILE.skipped.json with the reason.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import ddp_scaling, image_sets
from benchmarks.common import print_table, record, skip, timed_steps, write_results
from engine.data.loader import LoaderConfig, make_loader
from engine.errors import EXIT_BAD_INPUT, InputError
from engine.models import create_model, list_models, model_input
from engine.render import render_events
from kernels.presets import preset

PIPELINES = ("onthefly", "png", "dali", "bound")


@dataclass(frozen=True)
class Size:
    per_class: int                    # events generated per class
    synthetic: bool                   # synthetic events instead of Pythia
    batch_cpu: int
    warmup: int
    steps: int                        # per timing window
    windows: int                      # timing windows; the median is reported
    workers: tuple[int, ...]
    px: dict                          # image size per model
    gpu_warmup: int = 0               # on a GPU: at least this many warm-up steps (cuDNN autotuning)
    gpu_steps: int = 0                # on a GPU: at least this many steps per window
    gpu_per_class: int = 0            # on a GPU: at least this many events per class (big batches)


def worker_scan() -> tuple[int, ...]:
    cores = os.cpu_count() or 1
    return tuple(sorted({0, 1, 2} | {w for w in (4, 8, 12, 16, 24, 32) if w <= cores}))


SIZES = {"tiny": Size(40, True, 16, 1, 2, 1, (0, 1), {"small_cnn": 32, "resnet50": 64}),
         "quick": Size(150, False, 64, 2, 4, 3, (0, 1, 2), {"small_cnn": 64, "resnet50": 224}, 5, 10, 1000),
         "full": Size(2000, False, 64, 10, 50, 3, worker_scan(), {"small_cnn": 64, "resnet50": 224})}
GPU_BATCH = {"small_cnn": 512, "resnet50": 256}
CPU_OPTIONS = {"small_cnn": {"widths": (8, 16, 32, 64)}}    # model options without a GPU


@dataclass
class Bench:
    """One model's measurement context."""
    model: str
    size_px: int
    batch: int
    device: torch.device
    dtype: torch.dtype                # what the model is fed (bf16 on a GPU)
    root: Path                        # event shards
    images: image_sets.ImageSet
    num_classes: int
    warmup: int
    steps: int
    windows: int
    options: dict                     # model options (create_model keywords)

    @property
    def cfg(self):
        return preset("madrazo2017", self.size_px)

    def params(self, **extra) -> dict:
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"model": self.model, "size_px": self.size_px, "device": device, "batch": self.batch,
                "dtype": str(self.dtype).replace("torch.", ""), "torch_threads": torch.get_num_threads(),
                "steps": f"{self.windows} x {self.steps}",
                **{k: "-".join(map(str, v)) if isinstance(v, tuple) else v for k, v in self.options.items()},
                **extra}


def make_step(name: str, num_classes: int, device: torch.device, options: dict | None = None):
    """A training step on (images (B, C, H, W), labels (B,)): forward, loss, backward, SGD."""
    model = create_model(name, num_classes, **(options or {})).to(device).to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    autocast = device.type == "cuda"

    def step(batch):
        images, labels = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def to_model_input(images_nhwc: torch.Tensor, bench: Bench) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) channels-last in the model's dtype, on the device."""
    x = images_nhwc.to(bench.device, non_blocking=True).permute(0, 3, 1, 2)
    return x.to(bench.dtype).mul_(1.0 / 255.0)


def onthefly_stream(bench: Bench, workers: int):
    cfg = LoaderConfig(batch_size=bench.batch, workers=workers, drop_last=True, seed=0)
    loader = make_loader(bench.root, cfg, split="train")
    out, epoch, render_cfg = None, 0, bench.cfg
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            batch = {k: batch[k].to(bench.device, non_blocking=True)
                     for k in ("types", "features", "counts", "labels")}
            # the previous step has finished with `out` (CPU: synchronous; GPU: same stream)
            out = render_events(batch, render_cfg, out, dtype=bench.dtype, channels_last=True).images
            yield out, batch["labels"]
        epoch += 1


class PngDataset(torch.utils.data.Dataset):
    """Image i: the PNG file decoded with PIL -> (H, W, 3) uint8 tensor, and its label."""

    def __init__(self, files: list[Path], labels: np.ndarray):
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image
        with Image.open(self.files[i]) as image:
            array = np.array(image.convert("RGB"))       # writable copy for torch
        return torch.from_numpy(array), int(self.labels[i])


def png_stream(bench: Bench, workers: int):
    loader = torch.utils.data.DataLoader(
        PngDataset(bench.images.files, bench.images.labels), batch_size=bench.batch, shuffle=True,
        num_workers=workers, pin_memory=bench.device.type == "cuda", drop_last=True,
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0))
    while True:
        for images, labels in loader:
            yield to_model_input(images, bench), labels.to(bench.device, non_blocking=True)


def dali_stream(bench: Bench, workers: int):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    gpu = bench.device.type == "cuda"
    tars = [str(p) for p in bench.images.tars]

    @pipeline_def
    def images_pipeline():
        encoded, labels = fn.readers.webdataset(
            paths=tars, index_paths=[str(Path(p).with_suffix(".idx")) for p in tars],
            ext=[bench.images.tar_format, "cls"], dtypes=[types.UINT8, types.INT32],
            random_shuffle=True, initial_fill=min(1024, len(bench.images.labels)), name="Reader")
        decoded = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
        return decoded, labels

    pipe = images_pipeline(batch_size=bench.batch, num_threads=max(1, workers), seed=0,
                           device_id=(bench.device.index or 0) if gpu else None)
    pipe.build()
    iterator = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", auto_reset=True,
                                   last_batch_policy=LastBatchPolicy.DROP)
    while True:
        for (batch,) in iterator:     # valid until the next step: used at once
            labels = batch["labels"].view(-1).to(bench.device, non_blocking=True).long()
            yield to_model_input(batch["images"], bench), labels


def bound_stream(bench: Bench, workers: int):
    first = next(onthefly_stream(bench, 0))
    batch = (first[0].clone(), first[1].clone())
    while True:
        yield batch


STREAMS = {"onthefly": onthefly_stream, "png": png_stream, "dali": dali_stream, "bound": bound_stream}


def check_stream(bench: Bench, stream) -> None:
    """The batch every pipeline hands the model: (B, 3, S, S) in the model dtype, labels in range."""
    images, labels = next(stream)
    shape = (bench.batch, 3, bench.size_px, bench.size_px)
    assert tuple(images.shape) == shape and images.dtype == bench.dtype, (images.shape, images.dtype)
    assert images.device.type == bench.device.type and labels.device.type == bench.device.type
    assert labels.shape == (bench.batch,) and int(labels.min()) >= 0 and int(labels.max()) < bench.num_classes
    assert float(images.float().amin()) >= 0.0 and float(images.float().amax()) <= 1.0


def open_stream(bench: Bench, pipeline: str, workers: int):
    """A pipeline's batch stream, checked (see check_stream)."""
    stream = STREAMS[pipeline](bench, workers)
    try:
        check_stream(bench, stream)
    except BaseException:
        stream.close()
        raise
    return stream


def dali_skip(bench: Bench, workers: int, exc: Exception) -> dict:
    reason = f"DALI could not run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return skip("pipeline_images_per_s", reason, **bench.params(pipeline="dali", workers=workers))


def measure_round(bench: Bench, step, workers: int, dali_ok: bool) -> tuple[dict, list[dict]]:
    """Seconds of each timing window of every pipeline at `workers`, windows taken in turn."""
    streams, skips = {}, []
    drain = max(bench.warmup, 4 * max(workers, 1) + 2)       # > the batches a loader prefetches
    try:
        for pipeline in PIPELINES:
            if pipeline == "dali" and (workers == 0 or not dali_ok):
                continue                 # DALI always decodes in its own threads
            try:
                streams[pipeline] = open_stream(bench, pipeline, workers)
            except Exception as exc:     # noqa: BLE001  any DALI failure becomes a row saying why
                if pipeline != "dali":
                    raise
                skips.append(dali_skip(bench, workers, exc))
        seconds = {p: [] for p in streams}
        for _ in range(bench.windows):
            for pipeline in list(streams):
                try:
                    seconds[pipeline] += timed_steps(streams[pipeline], step, drain, bench.steps, bench.device)
                except Exception as exc:  # noqa: BLE001
                    if pipeline != "dali":
                        raise
                    skips.append(dali_skip(bench, workers, exc))
                    streams.pop(pipeline).close()
                    del seconds[pipeline]
    finally:
        for stream in streams.values():
            stream.close()       # stops the loaders' worker processes / the DALI pipeline
    return seconds, skips


def measure_model(bench: Bench, workers: tuple[int, ...]) -> tuple[list[dict], list[dict]]:
    """Every pipeline at every worker count for one model; rates, then ratios and 95% points."""
    step = make_step(bench.model, bench.num_classes, bench.device, bench.options)
    warm = bound_stream(bench, 0)     # first steps of a new model are slow (kernel selection,
    timed_steps(warm, step, bench.warmup, 0, bench.device)   # allocations): not charged to any pipeline
    warm.close()
    rates, skips, bound = {}, [], []
    for w in workers:
        seconds, missing = measure_round(bench, step, w, dali_ok=not skips)
        skips += missing
        bound += seconds.pop("bound")
        for pipeline, windows in seconds.items():
            rates[pipeline, w] = bench.steps * bench.batch / float(np.median(windows))
            print(f"  {bench.model:10s} {pipeline:9s} workers={w}: {rates[pipeline, w]:,.0f} images/s", flush=True)
    rates["bound", None] = bench.steps * bench.batch / float(np.median(bound))
    print(f"  {bench.model:10s} bound     (all rounds): {rates['bound', None]:,.0f} images/s", flush=True)
    records = [record("pipeline_images_per_s", rate, "images/s", **bench.params(pipeline=p, workers=w))
               for (p, w), rate in rates.items()]
    return records + derived_records(rates, bench, workers), skips


def derived_records(rates: dict, bench: Bench, workers: tuple[int, ...]) -> list[dict]:
    """Ratios per worker count and at the best, and the workers each pipeline needs for 95% of its best."""
    out = []
    best = {p: max((r, w) for (q, w), r in rates.items() if q == p) for p in PIPELINES
            if any(q == p for q, _ in rates)}
    for other in ("png", "dali", "bound"):
        name = f"onthefly_over_{other}"
        for w in workers:
            mine, theirs = rates.get(("onthefly", w)), rates.get((other, None if other == "bound" else w))
            if mine and theirs:
                out.append(record(name, mine / theirs, "ratio", **bench.params(workers=w)))
        if "onthefly" in best and other in best:
            out.append(record(name, best["onthefly"][0] / best[other][0], "ratio",
                              **bench.params(workers="best", onthefly_workers=best["onthefly"][1],
                                             other_workers=best[other][1])))
    for p, (top, _) in best.items():
        if p != "bound":
            need = min(w for (q, w), r in rates.items() if q == p and r >= 0.95 * top)
            out.append(record("workers_to_95pct_best", need, "workers", **bench.params(pipeline=p)))
    return out


def preparation_records(images: image_sets.ImageSet, shard_s: float, shard_bytes: int,
                        shard_events: int, all_events: int) -> list[dict]:
    """Time to prepare each pipeline's data and bytes per event on disk."""
    n, px, s = len(images.labels), images.size_px, images.seconds
    rows = [("png", s["render"] + s["png"], n, {"stages": "read shards + render + PNG encode + write"}),
            ("dali", s["render"] + s["tar"], n,
             {"stages": f"read shards + render + {images.tar_format} encode + tar + index"})]
    out = []
    for pipeline, seconds, events, extra in rows:
        params = {"pipeline": pipeline, "size_px": px, "events": events, **extra}
        out += [record("prepare_s", seconds, "s", **params),
                record("prepare_events_per_s", events / seconds, "events/s", **params)]
    out.append(record("prepare_s", shard_s, "s", pipeline="onthefly", events=all_events,
                      stages="read Parquet + encode + write shards (all splits)"))
    out.append(record("prepare_events_per_s", all_events / shard_s, "events/s", pipeline="onthefly",
                      events=all_events, stages="read Parquet + encode + write shards (all splits)"))
    out += [record("disk_bytes_per_event", images.bytes["png"] / n, "bytes/event", format="png files",
                   size_px=px, allocated_bytes_per_event=round(images.bytes["png_allocated"] / n)),
            record("disk_bytes_per_event", images.bytes["tar"] / n, "bytes/event",
                   format=f"{images.tar_format} in tars (DALI)", size_px=px),
            record("disk_bytes_per_event", shard_bytes / shard_events, "bytes/event",
                   format="event shards", size_px="any")]
    return out


# ---- the command line ----

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the records")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, few steps (a few minutes on 2 cores)")
    mode.add_argument("--tiny", action="store_true", help="synthetic events, tiny images (tests)")
    events = parser.add_mutually_exclusive_group()
    events.add_argument("--parquet", type=Path, help="canonical event Parquet files (default: generate)")
    events.add_argument("--synthetic", action="store_true",
                        help="synthetic events (engine.data.generation.synthetic) instead of generating "
                             "with Pythia")
    parser.add_argument("--models", help="comma-separated: small_cnn, resnet50 (default: both on a GPU, "
                                         "small_cnn without one)")
    parser.add_argument("--workers", help="comma-separated loader worker counts to scan")
    parser.add_argument("--dali-format", choices=("jpg", "png"), default="jpg", help="images in the DALI tars")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary data goes")
    return parser.parse_args(argv)


def model_list(args, gpu: bool) -> tuple[list[str], list[dict]]:
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in list_models() or model_input(m) != "image"]
        if unknown or not models:
            raise InputError("--models", f"not image models: {', '.join(unknown) or '(none given)'}")
        return models, []
    if gpu:
        return ["small_cnn", "resnet50"], []
    return ["small_cnn"], [skip("pipeline_images_per_s", "no GPU: ResNet50 at 224 px trains too slowly on "
                                "the CPU for this benchmark (run with --models resnet50 to force it)",
                                model="resnet50", size_px=224, device="cpu")]


def device_skips(gpu: bool) -> list[dict]:
    if gpu:
        return []
    return [skip("pipeline_images_per_s", "DALI GPU decoder (device='mixed'): no GPU on this machine",
                 pipeline="dali", decoder="mixed"),
            skip("pipeline_images_per_s", "GPU renderer (CUDA kernel): no GPU on this machine; "
                 "the on-the-fly rows use the CPU twin", pipeline="onthefly", renderer="cuda")]


def run(args, size: Size, tmp: Path) -> tuple[list[dict], list[dict]]:
    gpu = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    torch.backends.cudnn.benchmark = True
    models, skips = model_list(args, gpu)
    skips += device_skips(gpu)
    workers = tuple(int(w) for w in args.workers.split(",")) if args.workers else size.workers
    per_class = max(size.per_class, size.gpu_per_class * gpu)
    parquet = args.parquet or image_sets.make_events(tmp, per_class, size.synthetic or args.synthetic)
    root, shard_s = image_sets.write_event_shards(parquet, tmp / "shards")
    manifest = json.loads((root / "manifest.json").read_text())
    shard_bytes, shard_events = image_sets.split_bytes(root)
    records = []
    for name in models:
        px = size.px.get(name, 224)
        cfg = preset("madrazo2017", px)
        images = image_sets.prepare_images(root, cfg, tmp / f"images-{name}", args.dali_format)
        image_sets.check_images(root, cfg, images)
        records += preparation_records(images, shard_s, shard_bytes, shard_events, manifest["events"])
        batch = min(GPU_BATCH.get(name, 256) if gpu else size.batch_cpu, len(images.labels))
        bench = Bench(name, px, batch, device,
                      torch.bfloat16 if gpu else torch.float32, root, images, len(manifest["class_names"]),
                      max(size.warmup, size.gpu_warmup * gpu), max(size.steps, size.gpu_steps * gpu),
                      size.windows, {} if gpu else CPU_OPTIONS.get(name, {}))
        measured, missing = measure_model(bench, workers)
        records, skips = records + measured, skips + missing
    scaled, missing = ddp_scaling.scaling_records(root, size.warmup, size.steps, tmp)
    return records + scaled, skips + missing


def main(argv=None) -> int:
    args = parse_args(argv)
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    try:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            records, skips = run(args, size, Path(tmp))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # the prepare_* rows repeat per model for the shards: keep one
    unique = {json.dumps(r, sort_keys=True): r for r in records}
    records = list(unique.values())
    write_results(args.out, records, skips)
    print_table(records, skips, drop=("dtype", "stages"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
