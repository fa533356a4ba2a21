"""Loader throughput from shards behind a URL (XRootD, S3 on loopback) against the local folder.

    python -m benchmarks.remote --out FILE.json [--quick] [--workers W] [--no-convert]

A synthetic ttbar / W+jets / Drell-Yan set is sharded into a temporary folder, served by an
xrootd server (Debian's xrootd-server) and by moto's S3 server (its own process), both on 127.0.0.1 (as in
tests/servers.py). A correctness check comes first: one epoch from each URL gives the local
folder's batches, bit for bit. Then each source is timed over whole epochs after one warm-up
epoch, without a cache (`loader.cache_dir` empty), so every block is a ranged request; the
sources take turns over 3 rounds and the best round counts. Records:
  remote_loader_events_per_s  params {source: local | root | s3, workers, batch_size,
                              prefetch_blocks}: events per second into padded batches
  remote_over_local           params {source}: the rate from the server over the local rate
  remote_server_events_per_s  params {source, threads}: what the server gives at most: the
                              events in the blocks fetched by bare ranged reads in `threads`
                              threads (no decoding, no batching), over the same time
  remote_convert_events_per_s, remote_convert_over_local   (benchmarks.remote_convert; not with
                              --no-convert): `convert` of a NanoAOD file from root:// and local disk
A source whose server is not installed is a skip with the reason.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import torch

from benchmarks.common import print_table, record, skip, write_results
from engine.data.loader import LoaderConfig, make_loader
from tests.events import synthetic_shards

EVENTS_PER_CLASS = {"full": 200_000, "quick": 20_000}
SECONDS = {"full": 5.0, "quick": 1.0}


def start_servers(stack: ExitStack, local: Path) -> tuple[dict[str, str], list[dict]]:
    """{source: URL of the shard root} for each server that could start, and the skips."""
    import shutil

    from tests import servers
    urls, skips = {}, []
    if shutil.which("xrootd"):
        servers.world_readable(local.parent)
        server = servers.XRootD(local.parent)
        stack.callback(server.stop)
        urls["root"] = server.url(local)
    else:
        skips.append(skip("remote_loader_events_per_s", "no xrootd binary (apt-get install "
                          "xrootd-server)", source="root"))
    try:
        stack.enter_context(servers.s3_server(process=True))
        urls["s3"] = servers.upload(local, "s3://bench/shards")
    except Exception as exc:  # noqa: BLE001 - pytest's skip (moto or s3fs absent) and the like
        skips.append(skip("remote_loader_events_per_s", f"no S3 server ({exc})", source="s3"))
    return urls, skips


def check_same_batches(local: Path, url: str, cfg: LoaderConfig) -> None:
    want, got = make_loader(local, cfg), make_loader(url, cfg)
    pairs = list(zip(want, got, strict=True))
    assert pairs and all(torch.equal(a[k], b[k]) for a, b in pairs for k in a), f"{url} differs"


def time_loaders(paths: dict[str, str | Path], cfg: LoaderConfig, seconds: float,
                 rounds: int = 3) -> dict[str, float]:
    """{source: events/s}, the best of `rounds` rounds that take the sources in turn (a shared
    machine's noise hits them alike), each after one warm-up epoch (connections, workers)."""
    loaders = {source: make_loader(path, cfg) for source, path in paths.items()}
    for loader in loaders.values():
        for _ in loader:
            pass
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(rounds):
        for source, loader in loaders.items():
            events, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                loader.set_epoch(loader.epoch + 1)
                events += sum(len(batch["labels"]) for batch in loader)
            best[source] = max(best[source], events / (time.perf_counter() - start))
    return best


def time_ranged_reads(url: str, threads: int, seconds: float) -> float:
    """Events per second in the blocks of `url`'s train split, fetched by bare ranged reads."""
    from engine.data import remote, shards
    data = shards.open_split(url)
    blocks = [(s, j) for s in data.shards for j in range(len(s.sizes))]

    def fetch(item) -> int:
        shard, j = item
        remote.read(shard.path, int(shard.offsets[j]) - 512, int(shard.offsets[j] + shard.sizes[j]))
        return int(shard.events[j])

    events, start = 0, time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() - start < seconds:
            events += sum(pool.map(fetch, blocks))
    return events / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--no-convert", action="store_true", help="only the loader figures")
    args = parser.parse_args(argv)
    size = "quick" if args.quick else "full"
    cfg = LoaderConfig(batch_size=args.batch_size, workers=args.workers)
    params = {"workers": cfg.workers, "batch_size": cfg.batch_size,
              "prefetch_blocks": cfg.prefetch_blocks}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        local = synthetic_shards(Path(tmp), EVENTS_PER_CLASS[size], seed=0)
        urls, skips = start_servers(stack, local)
        for url in urls.values():
            check_same_batches(local, url, LoaderConfig(batch_size=args.batch_size))
        rates = time_loaders({"local": local, **urls}, cfg, SECONDS[size])
        ceilings = {source: time_ranged_reads(url, cfg.prefetch_blocks, SECONDS[size])
                    for source, url in urls.items()}
    records = [record("remote_loader_events_per_s", round(rate), "events/s", source=source, **params)
               for source, rate in rates.items()]
    records += [record("remote_over_local", round(rates[source] / rates["local"], 3), "ratio",
                       source=source) for source in urls]
    records += [record("remote_server_events_per_s", round(rate), "events/s", source=source,
                       threads=cfg.prefetch_blocks) for source, rate in ceilings.items()]
    if not args.no_convert:
        from benchmarks.remote_convert import QUICK_EVENTS, convert_rate
        with tempfile.TemporaryDirectory() as tmp:
            converted, convert_skips = convert_rate(Path(tmp), QUICK_EVENTS if args.quick else 5 * QUICK_EVENTS)
        records, skips = records + converted, skips + convert_skips
    write_results(args.out, records, skips)
    print_table(records, skips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
