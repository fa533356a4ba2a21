"""Run a list of independent tasks on an executor: retries, a progress bar, failures by name.

A task is a top-level (picklable) function and its arguments; it writes its own output atomically
and returns a small JSON-able result. `run_tasks` returns the results in task order, whichever
executor ran them and in whatever order they finished.

Failures: a task that raises InputError failed on bad input and is not retried; any other error
(a crash, a lost worker, a Dask KilledWorker) is retried `spec.retries` times. When every task has
ended, the failed ones raise TaskFailures naming each task and its problem (or, with
`keep_failures`, come back as `Failed` results); the tasks that completed keep their outputs.
"""
from __future__ import annotations

import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from engine.data.tasks.outcome import Failed, Task, attempt, settle
from engine.data.tasks.spec import ExecutorSpec
from engine.errors import InputError


class TaskFailures(InputError):
    """Some tasks failed for good; the others completed and their outputs stand."""

    def __init__(self, failed: list[Failed], total: int, hint: str = ""):
        self.failed = failed
        shown = "; ".join(f.line() for f in failed[:5]) + ("; ..." if len(failed) > 5 else "")
        super().__init__(f"{len(failed)} of {total} task(s) failed", shown + (f" ({hint})" if hint else ""))


def run_tasks(tasks: list[Task], spec: ExecutorSpec, progress: bool | None = None, desc: str = "tasks",
              keep_failures: bool = False, hint: str = "the completed tasks are kept: rerun the same "
                                                       "command to retry only the others") -> list:
    """Run every task on `spec`'s executor; results in task order (see the module docstring)."""
    if len({t.name for t in tasks}) != len(tasks):
        raise ValueError("task names must be unique")
    if not tasks:                     # nothing to run: no pool, no cluster started
        return []
    with _Progress(tasks, progress, desc) as bar:
        if spec.kind == "dask":
            from engine.data.tasks.dask_backend import run_on_dask
            outcomes = run_on_dask(tasks, spec, bar.done)
        elif spec.workers == 1 or len(tasks) <= 1:
            outcomes = _run_here(tasks, spec.retries, bar.done)
        else:
            outcomes = _run_on_pool(tasks, spec, bar.done)
    failed = [o for o in outcomes if isinstance(o, Failed)]
    if failed and not keep_failures:
        problems = {(f.source, f.problem) for f in failed}
        if len(failed) == len(tasks) and all(f.bad_input for f in failed) and len(problems) == 1:
            raise InputError(*problems.pop())    # every task met the same bad input: it is the run's
        raise TaskFailures(failed, len(tasks), hint)
    return outcomes


def _run_here(tasks: list[Task], retries: int, done: Callable[[Task, Any], None]) -> list:
    results = []
    for task in tasks:
        tries = 0
        while True:
            tries += 1
            final, value = settle(task, attempt(task), tries, retries)
            if final:
                break
        done(task, value)
        results.append(value)
    return results


def _run_on_pool(tasks: list[Task], spec: ExecutorSpec, done: Callable[[Task, Any], None]) -> list:
    """A spawned process pool. A worker killed mid-task breaks the pool: the tasks it held count
    an attempt that died, and the rest go on in a fresh pool."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results: dict[int, Any] = {}
    tries = dict.fromkeys(range(len(tasks)), 0)

    def finish(i: int, outcome: tuple[str, Any]) -> bool:
        final, value = settle(tasks[i], outcome, tries[i], spec.retries)
        if final:
            results[i] = value
            done(tasks[i], value)
        return final

    while len(results) < len(tasks):
        todo = [i for i in range(len(tasks)) if i not in results]
        with ProcessPoolExecutor(min(spec.workers, len(todo)), mp_context=context,
                                 initializer=_exit_with_parent) as pool:
            _pool_round(pool, tasks, todo, tries, finish)
    return [results[i] for i in range(len(tasks))]


def _exit_with_parent() -> None:
    """In a pool worker: a thread that ends the process when the command that started it is gone
    (killed), instead of finishing its task as an orphan; its temporaries are swept by the next run."""
    import multiprocessing
    import os
    import threading
    import time

    parent = multiprocessing.parent_process()

    def watch() -> None:
        while parent is None or parent.is_alive():
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _pool_round(pool: ProcessPoolExecutor, tasks: list[Task], todo: list[int], tries: dict[int, int],
                finish: Callable[[int, tuple[str, Any]], bool]) -> None:
    """Run `todo` on `pool` until each is final, or the pool breaks (the rest wait for the next)."""
    pending = {}

    def submit(i: int) -> None:
        tries[i] += 1
        pending[pool.submit(attempt, tasks[i])] = i

    for i in todo:
        submit(i)
    broken = False
    while pending and not broken:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            i = pending.pop(future)
            try:
                outcome = future.result()
            except BrokenProcessPool:
                broken = True
                outcome = ("error", "its worker process died")
            if not finish(i, outcome) and not broken:
                submit(i)
    for future, i in pending.items():   # a broken pool ends them all, most by dying
        try:
            outcome = future.result()
        except BrokenProcessPool:
            outcome = ("error", "its worker process died")
        finish(i, outcome)


class _Progress:
    """A bar over the tasks' events (events/s) with the count of tasks done; on a terminal only
    when `enabled` is None."""

    def __init__(self, tasks: list[Task], enabled: bool | None, desc: str):
        from tqdm import tqdm

        self.total = len(tasks)
        self.count = 0
        unit_total = sum(t.events for t in tasks)
        self.bar = tqdm(total=unit_total or len(tasks), unit="ev" if unit_total else "task", desc=desc,
                        file=sys.stderr, disable=None if enabled is None else not enabled)
        self.by_events = bool(unit_total)

    def done(self, task: Task, value: Any) -> None:
        self.count += 1
        self.bar.update(task.events if self.by_events else 1)
        self.bar.set_postfix_str(f"tasks {self.count}/{self.total}", refresh=False)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
