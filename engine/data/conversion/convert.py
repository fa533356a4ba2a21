"""Convert many input files into canonical event Parquet, one output per input, as independent
tasks on an executor (engine.data.tasks: a local process pool or a Dask cluster); resumable, and
in contiguous slices for array jobs. One input is converted by
`engine.data.conversion.one_file.convert_file`.

A run, in order:
1. `plan_jobs`: one job per input, a local path or a URL (`root://`, `s3://`, `https://`),
   `DIR/<input stem>.parquet`; two inputs may not share a stem, and no output may be an input.
   `inputs_of` adds the inputs of `--files-from` lists.
2. The inputs of this run's slice are checked (existence, format, tree, branches, truncation). A bad
   one stops the run before any work, unless `skip_bad`: then it is reported with the failures.
3. Every existing output of the whole list is examined (`outputs.examine`): one written with other
   settings stops the run before any work; done ones are skipped; the others are converted.
4. Each task writes its output atomically straight into DIR as it completes, so a killed run or a
   lost worker costs only the unfinished inputs, and when some fail the others complete and stay.
5. The run that finds every input of the whole list converted (or, with `skip_bad`, failed in this
   run) writes the record, `DIR/convert.json`, atomically and last.

Outputs are identical, byte for byte, whatever the executor, the number of workers and the slices;
the step size changes only how rows are cut into row groups, never the rows.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.data.canonical.selection import PRESETS, SelectionConfig
from engine.data.conversion.locations import Source, file_list, input_stem, location, size
from engine.data.conversion.one_file import (DEFAULT_STEP_SIZE, FORMATS, ConvertJob, ConvertResult,
                                             convert_file, detect_format, known_events, open_reader)
from engine.data.conversion.outputs import (MISSING, RECORD_NAME, Existing, examine, expected_settings,
                                            other_settings_error, record_entry, write_record)
from engine.data.tasks import ExecutorSpec, Failed, Task, TaskSlice, run_tasks
from engine.errors import InputError
from engine.files import sweep_temporaries, writable_folder

CHECK_THREADS = 8
"""Inputs checked at the same time."""

__all__ = ["DEFAULT_STEP_SIZE", "FORMATS", "RECORD_NAME", "ConvertJob", "ConvertResult", "ConvertRun",
           "ConvertFailures", "Failure", "convert_all", "convert_file", "inputs_of", "plan_jobs"]


@dataclass(frozen=True)
class Failure:
    """An input that failed: `input` as given, and the source and problem of its InputError."""

    input: str
    source: str
    problem: str

    def error(self) -> InputError:
        return InputError(self.source, self.problem)


class ConvertFailures(InputError):
    """Some inputs failed while converting; the others completed and their outputs stand (`run`)."""

    def __init__(self, run: "ConvertRun"):
        self.run = run
        first, more = run.failures[0], len(run.failures) - 1
        super().__init__(first.source, first.problem + (f" (and {more} more input(s) failed)" if more else ""))


@dataclass(frozen=True)
class Checked:
    """A job whose input passed the checks, with its format resolved, its size and its events."""

    job: ConvertJob
    input_bytes: int
    events: int


@dataclass
class ConvertRun:
    """What one run did with the inputs of its slice, and where the whole list stands."""

    converted: list[ConvertResult] = field(default_factory=list)
    skipped: list[ConvertJob] = field(default_factory=list)
    """Inputs whose output was already done."""
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    """Outputs that did not open (and why), converted again."""
    failures: list[Failure] = field(default_factory=list)
    remaining: int = 0
    """Inputs of the whole list not converted yet (after this run)."""
    record: Path | None = None
    """The record, if this run wrote it."""


def inputs_of(inputs: list[str | Source], lists: list[str | Source] = ()) -> list[Source]:
    """The `inputs`, then the entries of each list file of `lists` (`--files-from`, see
    engine.data.conversion.locations), in order; InputError for a list that names no input, or
    if there is no input at all."""
    found = [location(i) for i in inputs]
    for listing in lists:
        entries = file_list(listing)
        if not entries:
            raise InputError(location(listing), "lists no input (one path or URL a line)")
        found.extend(entries)
    if not found:
        raise InputError("INPUT", "none given: name files or URLs, or --files-from LIST")
    return found


def plan_jobs(inputs: list[str | Source], out_dir: str | Path, label: str, fmt: str = "auto",
              selection: SelectionConfig | None = None,
              step_size: int = DEFAULT_STEP_SIZE) -> list[ConvertJob]:
    """One job per input (a local path or a URL), writing `out_dir/<input stem>.parquet`; two
    inputs may not share a stem."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}", f"unknown format (known: {', '.join(FORMATS)})")
    if not label or label != label.strip():
        raise InputError("--label", "must be a non-empty name without surrounding spaces")
    if step_size < 1:
        raise InputError("--step-size", "must be at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output path exists and is not a folder")
    selection = PRESETS["madrazo2017"] if selection is None else selection
    jobs, seen = [], {}
    written = {(out_dir / RECORD_NAME).resolve()}
    for source in map(location, inputs):
        if not input_stem(source):
            raise InputError(source, "names no file (an output is named after its input's file name)")
        out = out_dir / f"{input_stem(source)}.parquet"
        written.add(out.resolve())
        if isinstance(source, Path) and source.resolve() in written:
            raise InputError(source, f"is an input, and this run would overwrite it in {out_dir}")
        if out in seen:
            raise InputError(source, f"would write the same output as {seen[out]} ({out}); rename one")
        seen[out] = source
        jobs.append(ConvertJob(source, out, label, fmt, selection, step_size))
    return jobs


def check_inputs(jobs: list[ConvertJob], skip_bad: bool = False) -> tuple[list[Checked], list[Failure]]:
    """Open every input (no event data read), `CHECK_THREADS` at a time (a remote check waits on
    a few round trips to its server). The first bad one in order raises InputError, unless
    `skip_bad`: then the bad ones come back as failures."""
    with ThreadPoolExecutor(max(1, min(CHECK_THREADS, len(jobs)))) as pool:
        outcomes = list(pool.map(_check, jobs))
    checked, failures = [], []
    for job, outcome in zip(jobs, outcomes):
        if isinstance(outcome, Checked):
            checked.append(outcome)
        elif not skip_bad:
            raise outcome
        else:
            failures.append(Failure(str(job.source), outcome.source, outcome.problem))
    return checked, failures


def _check(job: ConvertJob) -> Checked | InputError:
    try:
        reader = open_reader(job.source, job.fmt, job.step_size)
    except InputError as exc:
        return exc
    try:
        return Checked(replace(job, fmt=reader.format), size(job.source), known_events(reader))
    except InputError as exc:
        return exc
    finally:
        reader.close()


def convert_all(jobs: list[ConvertJob], out_dir: str | Path, executor: ExecutorSpec | None = None,
                skip_bad: bool = False, part: TaskSlice | None = None,
                progress: bool | None = False) -> ConvertRun:
    """Convert the `part` slice of `jobs` (from `plan_jobs(..., out_dir, ...)`, the whole list) on
    `executor`; see the module docstring. InputError for a bad input (without `skip_bad`) or an
    output of other settings, before any work; inputs that fail while converting raise
    ConvertFailures once the others completed (without `skip_bad`), or are in the result."""
    executor, part = executor or ExecutorSpec(), part or TaskSlice()
    checked, failures = check_inputs([jobs[i] for i in part.select(len(jobs))], skip_bad)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    writable_folder(out_dir)
    try:
        sweep_temporaries(out_dir)          # what killed writers left
        found = _survey(jobs, {c.job.source: c for c in checked})
        run = ConvertRun(failures=failures)
        todo = _to_convert(checked, found, run)
        run.converted, failed = _convert(todo, executor, progress)
        order = {str(job.source): i for i, job in enumerate(jobs)}
        run.failures = sorted(run.failures + failed, key=lambda f: order[f.input])
        _finish(jobs, out_dir, found, run, skip_bad)
    finally:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
    if run.failures and not skip_bad:
        raise ConvertFailures(run)
    return run


def _to_convert(checked: list[Checked], found: dict[Source, Existing], run: ConvertRun) -> list[Checked]:
    """The checked inputs whose output is not done; the others go to `run.skipped`."""
    todo = []
    for item in checked:
        state = found[item.job.source]
        if state.state == "done":
            run.skipped.append(item.job)
            continue
        if state.state == "damaged":
            run.damaged.append((item.job.out, state.detail))
        todo.append(item)
    return todo


def _survey(jobs: list[ConvertJob], checked: dict[Source, Checked]) -> dict[Source, Existing]:
    """Every job's output state, by input; InputError for the first written with other settings."""
    found = {}
    for job in jobs:
        state = _state(job, checked.get(job.source))
        if state.state == "other":
            raise other_settings_error(job, state.detail)
        found[job.source] = state
    return found


def _state(job: ConvertJob, item: Checked | None) -> Existing:
    """`examine` the output; for an input this run did not check (another slice's, or a bad one),
    only if the input can be sized and its format told, else it counts as missing."""
    if item is not None:
        return examine(job, expected_settings(job, item.job.fmt, item.input_bytes))
    if not job.out.exists():
        return MISSING
    try:
        fmt = detect_format(job.source) if job.fmt == "auto" else job.fmt
        input_bytes = size(job.source)
    except (InputError, OSError):
        return MISSING
    return examine(job, expected_settings(job, fmt, input_bytes))


def _convert(todo: list[Checked], executor: ExecutorSpec,
             progress: bool | None) -> tuple[list[ConvertResult], list[Failure]]:
    tasks = [Task(str(item.job.source), convert_file, (item.job,), item.events) for item in todo]
    outcomes = run_tasks(tasks, executor, progress=progress, desc="convert", keep_failures=True)
    failures = [Failure(o.name, o.source, o.problem) for o in outcomes if isinstance(o, Failed)]
    return [o for o in outcomes if isinstance(o, ConvertResult)], failures


def _finish(jobs: list[ConvertJob], out_dir: Path, found: dict[Source, Existing], run: ConvertRun,
            skip_bad: bool) -> None:
    """Count the inputs of the whole list still unconverted (looking again at the outputs other runs
    may have written since the survey); write the record if there are none."""
    now = {result.source: result for result in run.converted}
    failed = {f.input for f in run.failures} if skip_bad else set()
    entries, remaining = [], 0
    for job in jobs:
        result = now.get(job.source) or found[job.source]
        if isinstance(result, Existing) and result.state != "done" and str(job.source) not in failed:
            result = _state(job, None)
        if isinstance(result, ConvertResult) or result.state == "done":
            entries.append(record_entry(job, result))
        elif str(job.source) not in failed:
            remaining += 1
    run.remaining = remaining
    if remaining == 0 and entries:
        run.record = out_dir / RECORD_NAME
        write_record(run.record, entries, [_failed_entry(f) for f in run.failures])


def _failed_entry(failure: Failure) -> dict:
    same = failure.source == failure.input
    return {"input": failure.input, "problem": failure.problem if same else f"{failure.source}: {failure.problem}"}
