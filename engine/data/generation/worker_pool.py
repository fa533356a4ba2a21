"""Generation workers: one process per worker (spawned), each writing its share of the rows to a
part file in a hidden folder and reporting progress and its result through one queue.

A worker whose parent is gone (the command was killed) stops after its current batch; the parts
folder of a killed run is hidden from every reader and removed by the next run into the folder.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import traceback
from pathlib import Path
from typing import Callable

from engine.errors import InputError
from engine.files import private_folder

Work = Callable[..., dict]
"""`work(job, worker, quota, part_path, report) -> result`, e.g. engine.data.generation.generate.run_worker."""


def parts_folder(out_dir: Path, process: str):
    """A hidden folder for this run's part files, removed at the end whatever happens."""
    return private_folder(out_dir, f".{process}-parts-")


def run_workers(work: Work, job, quotas: list[int], parts: list[Path],
                report: Callable[[int, int], None]) -> list[dict]:
    """`work(job, w, quotas[w], parts[w], report)` for every worker w with a non-zero quota: in this
    process for one worker, else one spawned process each. Returns their results in worker order;
    an InputError in a worker is raised here as it was, any other failure as a RuntimeError."""
    if len(quotas) == 1:
        return [work(job, 0, quotas[0], parts[0], report)]
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(work, job, w, q, parts[w], messages),
                         daemon=True)
             for w, q in enumerate(quotas) if q]
    for proc in procs:
        proc.start()
    results: dict[int, dict] = {}
    try:
        while len(results) < len(procs):
            try:
                kind, worker, payload = messages.get(timeout=1.0)
            except queue_mod.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a generator worker died without reporting") from None
                continue
            if kind == "progress":
                report(*payload)
            elif kind == "done":
                results[worker] = payload
            elif kind == "input_error":
                raise InputError(*payload)
            else:
                raise RuntimeError(f"generator worker {worker} failed:\n{payload}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    return [results[w] for w in sorted(results)]


def _worker_main(work: Work, job, worker: int, quota: int, part: Path, messages) -> None:
    parent = mp.parent_process()

    def report(generated: int, accepted: int) -> None:
        if parent is not None and not parent.is_alive():  # killed: stop, and leave no part behind
            raise SystemExit(1)
        messages.put(("progress", worker, (generated, accepted)))

    try:
        result = work(job, worker, quota, part, report)
        messages.put(("done", worker, result))
    except InputError as exc:
        messages.put(("input_error", worker, (exc.source, exc.problem)))
    except BaseException:
        messages.put(("error", worker, traceback.format_exc()))
