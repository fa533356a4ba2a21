"""Where tasks run: the executor options every data-preparation command shares, validated.

`--executor local` (the default) is a process pool on this machine (`--workers W`; one worker runs
the tasks in this process). `--executor dask` runs them on a Dask cluster: an existing scheduler
(`--scheduler tcp://HOST:PORT`), or one this command starts from a YAML spec (`--cluster FILE`):

    type: slurm            # local | slurm | htcondor
    workers: 20            # local: worker processes; slurm/htcondor: batch jobs, one worker each
    threads_per_worker: 1  # Pythia is not thread-safe: keep 1 for generation
    start_timeout_s: 900   # wait this long for the first worker's job to start, then stop
    options:               # passed as they are to dask_jobqueue.SLURMCluster / HTCondorCluster
      cores: 1
      memory: 4GB
      walltime: "04:00:00"

`--task-index I --num-tasks T` (generate and convert) runs only the I-th of T contiguous slices of
the task list, for HTCondor or Slurm array jobs without Dask. In a Slurm array job they default to
the element's place in the array (`SLURM_ARRAY_TASK_ID`, `_MIN`, `_STEP`, `_COUNT`), so an array
element needs no slice options; HTCondor passes `--task-index $(Process) --num-tasks N`.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.config import FieldError, from_dict, load_yaml
from engine.errors import InputError

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class ClusterConfig:
    """A Dask cluster this command starts and stops (see the module docstring)."""

    type: Literal["local", "slurm", "htcondor"] = "local"
    workers: int = 2
    threads_per_worker: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    start_timeout_s: float = 900.0
    """Seconds to wait for the first worker (its batch job may queue) before the run stops."""

    def __post_init__(self):
        for name in ("workers", "threads_per_worker"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be at least 1, got {getattr(self, name)}")
        if not self.start_timeout_s > 0:
            raise FieldError("start_timeout_s", f"must be a number of seconds > 0, got {self.start_timeout_s}")


@dataclass(frozen=True)
class ExecutorSpec:
    """How to run a list of tasks: where, on how many workers, how often to retry a failed task."""

    kind: str = "local"
    workers: int = 1
    scheduler: str | None = None
    cluster: ClusterConfig | None = None
    cluster_file: str | None = None
    retries: int = 2
    """Attempts after the first for a task that failed with an error that is not bad input."""

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise InputError("--executor", f"must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.workers < 1:
            raise InputError("--workers", f"must be at least 1, got {self.workers}")
        if self.retries < 0:
            raise InputError("--retries", f"must be >= 0, got {self.retries}")
        if self.kind == "dask" and (self.scheduler is None) == (self.cluster is None):
            raise InputError("--executor dask", "needs exactly one of --scheduler tcp://HOST:PORT "
                                                "or --cluster FILE.yaml")
        if self.kind == "local" and (self.scheduler or self.cluster):
            raise InputError("--scheduler/--cluster", "only go with --executor dask")


@dataclass(frozen=True)
class TaskSlice:
    """The I-th of T contiguous slices of a task list (an array job's share)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1:
            raise InputError("--num-tasks", f"must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise InputError("--task-index", f"must be in 0..{self.count - 1} (--num-tasks "
                                             f"{self.count}), got {self.index}")

    def select(self, n_tasks: int) -> range:
        """Indices of this slice's tasks among `n_tasks`; the T slices cover each task once."""
        return range(self.index * n_tasks // self.count, (self.index + 1) * n_tasks // self.count)

    @property
    def whole(self) -> bool:
        return self.count == 1


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the tasks run")
    group.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: a process pool on this machine; dask: a Dask cluster")
    group.add_argument("--workers", type=int, default=1, metavar="W",
                       help="local worker processes (default 1: in this process)")
    group.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="a running Dask scheduler (with --executor dask)")
    group.add_argument("--cluster", default=None, metavar="FILE.yaml",
                       help="a Dask cluster to start: local, slurm or htcondor (with --executor dask)")
    group.add_argument("--retries", type=int, default=2, metavar="N",
                       help="retries of a task that failed other than by bad input (default 2)")


def add_slice_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("array jobs")
    group.add_argument("--task-index", type=int, default=None, metavar="I",
                       help="run only slice I (0-based) of --num-tasks slices of the tasks (default "
                            "in a Slurm array job: the element's index in the array)")
    group.add_argument("--num-tasks", type=int, default=None, metavar="T",
                       help="number of slices (array jobs) the tasks are cut into (default in a Slurm "
                            "array job: SLURM_ARRAY_TASK_COUNT)")


def executor_spec(args: argparse.Namespace) -> ExecutorSpec:
    """The validated ExecutorSpec of parsed CLI arguments (InputError on bad values)."""
    cluster = None
    if args.cluster is not None:
        try:
            cluster = from_dict(ClusterConfig, load_yaml(args.cluster), "cluster")
        except InputError as exc:
            if exc.source == str(args.cluster):
                raise
            raise InputError(args.cluster, f"{exc.source}: {exc.problem}") from None
    return ExecutorSpec(kind=args.executor, workers=args.workers, scheduler=args.scheduler,
                        cluster=cluster, cluster_file=args.cluster, retries=args.retries)


def task_slice(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> TaskSlice:
    """The slice of `--task-index/--num-tasks`; without them, the Slurm array element this runs as
    (`environ`, default os.environ), or the whole list outside an array job."""
    index, count = getattr(args, "task_index", None), getattr(args, "num_tasks", None)
    if (index is None) != (count is None):
        raise InputError("--task-index/--num-tasks", "give both or neither")
    if index is not None:
        return TaskSlice(index, count)
    found = array_slice(os.environ if environ is None else environ)
    if not found.whole:
        print(f"slice {found.index} of {found.count} from the Slurm array element's environment "
              "(SLURM_ARRAY_TASK_*; --task-index/--num-tasks override it)", file=sys.stderr)
    return found


def array_slice(environ: Mapping[str, str]) -> TaskSlice:
    """The slice of a Slurm array element: element (ID - MIN) / STEP of COUNT, so `--array=0-99`,
    `--array=1-100` and `--array=0-198:2` all cut the tasks into 100 slices. An array given as a
    list (`--array=3,7`) has no such place: the slice options must say it."""
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return TaskSlice()
    task, first, count, step = (_whole(environ, name, default) for name, default in
                                (("SLURM_ARRAY_TASK_ID", None), ("SLURM_ARRAY_TASK_MIN", "0"),
                                 ("SLURM_ARRAY_TASK_COUNT", None), ("SLURM_ARRAY_TASK_STEP", "1")))
    last = first + (count - 1) * step
    if _whole(environ, "SLURM_ARRAY_TASK_MAX", str(last)) != last:
        raise InputError("SLURM_ARRAY_TASK_ID", f"the array is a list of {count} elements, not a range "
                                                "A-B[:S]: give --task-index and --num-tasks")
    offset = task - first
    if step < 1 or offset < 0 or offset % step or not 0 <= offset // step < count:
        raise InputError("SLURM_ARRAY_TASK_ID", f"{task} is not element 0..{count - 1} of an array "
                                                f"{first}..{last} in steps of {step} "
                                                "(use --array=A-B[:S], or give --task-index and --num-tasks)")
    return TaskSlice(offset // step, count)


def _whole(environ: Mapping[str, str], name: str, default: str | None) -> int:
    text = environ.get(name, default)
    if text is None:
        raise InputError(name, "is not set, but SLURM_ARRAY_TASK_ID is (give --task-index and --num-tasks)")
    try:
        return int(text)
    except ValueError:
        raise InputError(name, f"expected a whole number, got {text!r}") from None
