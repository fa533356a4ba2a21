"""A generation run: plan the tasks of a GenerateJob, skip those whose parts are complete, run the
others on an executor, and list the parts in the dataset document (engine.data.canonical.parts).

The output of `generate(job, DIR)` is the folder DIR/<process>/ of parts `part-000000.parquet`...
and `_dataset.json`. A part is complete when it opens cleanly (page and metadata checksums) and
its provenance has this job's settings, its task index and its quota of rows; a part written with
other settings is an InputError naming the first difference, never mixed in. A task slice (array
job) runs only its tasks; whichever run finds every part complete writes the final document, so
the slices of one job together give the same folder as one run.

With pileup, the pileup library (engine.data.generation.pileup) is made first, in this process,
under DIR/.pileup/ (hidden, so readers of DIR never list it) or the folder given; every task
reads it, and later runs with the same seed, energy and library size reuse it.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.data.canonical import parts
from engine.data.canonical.parquet_io import open_parquet
from engine.data.generation import pileup
from engine.data.generation.generate import GenerateJob, run_task
from engine.data.generation.processes import get_process
from engine.data.tasks import ExecutorSpec, Task, TaskSlice, run_tasks
from engine.errors import InputError
from engine.files import make_folder, sweep_temporaries, writable_folder


COUNTS = ("pythia_seed", "generated", "accepted", "pythia_tried", "sigma_pb", "sigma_err_pb")
"""What a part records of its task, listed in the dataset document."""
LIBRARY_FOLDER = ".pileup"
"""Default home of the pileup library inside the output folder."""


def generate(job: GenerateJob, out_dir: str | Path, executor: ExecutorSpec | None = None,
             tasks: TaskSlice | None = None, progress: bool | None = None,
             library_folder: str | Path | None = None) -> dict:
    """Run `job` (or its slice `tasks`) into out_dir/<process>/; returns the summary (see `summarise`).

    `library_folder` holds the pileup library (default out_dir/.pileup).
    """
    executor = executor or ExecutorSpec()
    tasks = tasks or TaskSlice()
    out_dir = writable_folder(out_dir)
    folder = _dataset_folder(out_dir, job.process)
    quotas = job.quotas()
    settings = job.settings()
    _check_document(folder, settings)
    existing = _existing_parts(folder, len(quotas))
    mine = tasks.select(len(quotas))

    def counts(i: int) -> dict | None:
        return _part_counts(folder / parts.part_name(i), settings, i, quotas[i])

    found = {i: counts(i) for i in mine if i in existing}
    todo = [i for i in mine if not found.get(i)]
    parts.write_document(folder, _plan_document(job, settings, len(quotas)))
    sweep_temporaries(folder)
    start = time.perf_counter()
    try:
        library = None
        if job.pileup is not None and todo:
            library = pileup.ensure_library(Path(library_folder or out_dir / LIBRARY_FOLDER),
                                            job.pileup, job.ecm_gev, job.seed)
        run = [Task(f"{job.process}-{i:06d}", run_task,
                    (job, i, quotas[i], folder / parts.part_name(i), settings, library),
                    events=quotas[i]) for i in todo]
        results = run_tasks(run, executor, progress=progress, desc=job.process)
    except InputError:
        _forget_if_empty(folder)
        raise
    seconds = time.perf_counter() - start
    found.update((i, {k: result[k] for k in COUNTS}) for i, result in zip(todo, results))
    found.update((i, counts(i)) for i in range(len(quotas)) if i not in mine)   # other slices' parts
    found = dict(sorted(found.items()))
    complete = all(found.values())
    if complete:
        parts.write_document(folder, _final_document(job, settings, found))
    return summarise(job, folder, found, ran=todo, slice_tasks=mine, seconds=seconds,
                     complete=complete)


def _forget_if_empty(folder: Path) -> None:
    """After a failed run that left no part: remove the plan (and the folder if it is then empty)."""
    if not any(folder.glob("part-*.parquet")):
        (folder / parts.DATASET).unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def _dataset_folder(out_dir: Path, process: str) -> Path:
    folder = out_dir / get_process(process).name
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "is a file: the generated parts go into a folder of that name")
    return make_folder(folder, "the dataset folder")


def _check_document(folder: Path, settings: dict) -> None:
    doc = parts.read_document(folder)
    if doc is not None and doc.get("settings") != settings:
        raise InputError(folder, f"holds a dataset generated with other settings "
                                 f"({_difference(doc.get('settings'), settings)}): use another --out")


def _existing_parts(folder: Path, n_tasks: int) -> dict[int, Path]:
    found = {}
    for path in sorted(folder.glob("part-*.parquet")):
        try:
            task = int(path.stem.removeprefix("part-"))
        except ValueError:
            raise InputError(path, "is not a part of this dataset (unexpected name)") from None
        if task >= n_tasks:
            raise InputError(path, f"is beyond this run's {n_tasks} task(s) (left by a run with more "
                                   f"--events): remove it or use another --out")
        found[task] = path
    return found


def _part_counts(path: Path, settings: dict, task: int, quota: int) -> dict | None:
    """The counts in a complete part's provenance; None if it is missing or unreadable (it is then
    generated again); InputError if it was written with other settings."""
    if not path.is_file():
        return None
    try:
        pf, meta = open_parquet(path)
    except InputError:
        return None
    prov = meta.get("provenance", {})
    mine = {k: prov.get(k) for k in settings}
    if mine != settings:
        raise InputError(path, f"was generated with other settings ({_difference(mine, settings)}): "
                               f"use another --out")
    if prov.get("task") != task or prov.get("accepted") != quota or pf.metadata.num_rows != quota:
        return None
    return {k: prov[k] for k in COUNTS}


def _difference(found, wanted: dict) -> str:
    """The first difference, as `key old -> new`: a key only one side has first, then values."""
    found = found if isinstance(found, dict) else {}
    for key in [k for k in wanted if k not in found] + [k for k in found if k not in wanted]:
        return f"{key} {found.get(key)} -> {wanted.get(key)}"
    for key in wanted:
        if found.get(key) != wanted[key]:
            old, new = found.get(key), wanted[key]
            if isinstance(old, dict) and isinstance(new, dict):
                return f"{key}.{_difference(old, new)}"
            return f"{key} {old} -> {new}"
    return "unknown keys"


def _plan_document(job: GenerateJob, settings: dict, n_tasks: int) -> dict:
    process = get_process(job.process)
    return {"kind": process.kind, "process": process.name, "class_names": [process.name],
            "settings": settings, "events": job.events, "tasks": n_tasks, "complete": False, "parts": []}


def _final_document(job: GenerateJob, settings: dict, found: dict[int, dict]) -> dict:
    doc = _plan_document(job, settings, len(found))
    sigma, error = cross_section(list(found.values()))
    listed = [{"name": parts.part_name(i), "task": i, **found[i]} for i in sorted(found)]
    return {**doc, "complete": True, "parts": listed, "cross_section_pb": sigma,
            "cross_section_err_pb": error, "generated": sum(c["generated"] for c in found.values()),
            "accepted": sum(c["accepted"] for c in found.values())}


def cross_section(counts: list[dict]) -> tuple[float, float]:
    """Pythia's cross-sections of the parts, combined with their numbers of tries as weights (pb)."""
    weights = np.array([c["pythia_tried"] for c in counts], dtype=np.float64)
    sigma = np.array([c["sigma_pb"] for c in counts])
    error = np.array([c["sigma_err_pb"] for c in counts])
    total = weights.sum() or 1.0
    return float((weights * sigma).sum() / total), float(np.sqrt(((weights * error) ** 2).sum()) / total)


def summarise(job: GenerateJob, folder: Path, found: dict[int, dict | None], ran: list[int],
              slice_tasks: range, seconds: float, complete: bool) -> dict:
    """path, tasks, tasks_run, tasks_skipped, parts_done, complete, generated/accepted (over the
    parts there), acceptance, seconds, rate_per_s and generated_per_s (of the tasks run here), cross-section."""
    there = [c for c in found.values() if c]
    generated = sum(c["generated"] for c in there)
    accepted = sum(c["accepted"] for c in there)
    run_rows = sum(found[i]["accepted"] for i in ran if found.get(i))
    run_generated = sum(found[i]["generated"] for i in ran if found.get(i))
    sigma, error = cross_section(there) if there else (0.0, 0.0)
    return {"path": str(folder), "tasks": len(found), "tasks_run": len(ran),
            "tasks_skipped": len(slice_tasks) - len(ran), "parts_done": len(there), "complete": complete,
            "generated": generated, "accepted": accepted, "acceptance": accepted / max(generated, 1),
            "seconds": seconds, "rate_per_s": run_rows / seconds if seconds > 0 and ran else 0.0,
            "generated_per_s": run_generated / seconds if seconds > 0 and ran else 0.0,
            "cross_section_pb": sigma, "cross_section_err_pb": error}


def format_summary(summary: dict, process: str) -> list[str]:
    """The closing lines printed by the CLI."""
    lines = [f"{process}: {summary['tasks_run']} task(s) run, {summary['tasks_skipped']} already complete; "
             f"{summary['parts_done']} of {summary['tasks']} parts in {summary['path']}"]
    if summary["tasks_run"]:
        lines.append(f"{process}: ran in {summary['seconds']:.1f} s = {summary['rate_per_s']:.1f} accepted/s")
    if summary["complete"]:
        lines.append(f"{process}: generated {summary['generated']} events, accepted {summary['accepted']} "
                     f"(acceptance {summary['acceptance']:.3f}); Pythia cross-section "
                     f"{summary['cross_section_pb']:.4g} +- {summary['cross_section_err_pb']:.2g} pb")
    else:
        lines.append(f"{process}: unfinished: the other slices (or a rerun without --task-index) "
                     f"complete it")
    return lines
