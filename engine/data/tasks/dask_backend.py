"""Tasks on Dask: an existing scheduler, or a cluster started from a ClusterConfig
(distributed.LocalCluster, or dask_jobqueue's SLURMCluster / HTCondorCluster).

A cluster's batch jobs (Slurm, HTCondor) start their workers when the batch system runs them:
the run waits for the first one (`ClusterConfig.start_timeout_s`), stops at once when the batch
system refuses every worker job (the submit command's error), and closing the cluster, at the end
or on any error, cancels the jobs. The scheduler listens where the `interface` option says
(`lo` on one machine, the compute network's interface on a cluster).

Each attempt is one Dask task (`pure=False`, so a retry is a new key). Dask itself reruns a task
whose worker was lost (up to `distributed.scheduler.allowed-failures`); when it gives up
(KilledWorker) or the task raised, the attempt counts against `spec.retries` like on the local pool.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from engine.data.tasks.outcome import Task, attempt, settle
from engine.data.tasks.spec import ClusterConfig, ExecutorSpec
from engine.errors import InputError

JOBQUEUE = {"slurm": "SLURMCluster", "htcondor": "HTCondorCluster"}


def run_on_dask(tasks: list[Task], spec: ExecutorSpec, done: Callable[[Task, Any], None]) -> list:
    from distributed import as_completed

    with client_for(spec) as client:
        tries = dict.fromkeys(range(len(tasks)), 1)
        futures = {client.submit(attempt, task, pure=False, key=_key(task, 1)): i
                   for i, task in enumerate(tasks)}
        results: dict[int, Any] = {}
        queue = as_completed(list(futures))
        for future in queue:
            i = futures.pop(future)
            outcome = _outcome(future)
            final, value = settle(tasks[i], outcome, tries[i], spec.retries)
            if final:
                results[i] = value
                done(tasks[i], value)
                continue
            tries[i] += 1
            again = client.submit(attempt, tasks[i], pure=False, key=_key(tasks[i], tries[i]))
            futures[again] = i
            queue.add(again)
    return [results[i] for i in range(len(tasks))]


def _key(task: Task, tries: int) -> str:
    import uuid

    return f"{task.name}-try{tries}-{uuid.uuid4().hex[:8]}"


def _outcome(future) -> tuple[str, Any]:
    """The attempt's own ("ok"|"input_error"|"error", value), or an error Dask raised for it."""
    if future.status == "finished":
        return future.result()
    exc = future.exception()
    return "error", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"


@contextmanager
def client_for(spec: ExecutorSpec) -> Iterator[Any]:
    """A distributed.Client on the spec's scheduler, or on a cluster started (and stopped) here."""
    from distributed import Client

    if spec.scheduler is not None:
        try:
            client = Client(spec.scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"--scheduler {spec.scheduler}", f"cannot connect ({type(exc).__name__}: "
                                                              f"{str(exc).splitlines()[0][:160]})") from None
        with client:
            yield client
        return
    refusals: list[str] = []
    with start_cluster(spec.cluster, spec.cluster_file, refusals) as cluster, Client(cluster) as client:
        _wait_for_a_worker(client, spec.cluster, spec.cluster_file or "cluster", refusals)
        yield client


def _wait_for_a_worker(client, config: ClusterConfig, source: str, refusals: list[str]) -> None:
    """Wait for the first worker (batch jobs may queue); the run goes on as more join. An InputError
    when the batch system refused every worker job, or when none started within
    `config.start_timeout_s`; the cluster's jobs are cancelled on the way out."""
    deadline = time.monotonic() + config.start_timeout_s
    while len(refusals) < config.workers:
        left = deadline - time.monotonic()
        if left <= 0:
            where = {"slurm": "squeue and the workers' job logs", "htcondor": "condor_q and the workers' job logs",
                     "local": "the memory and processes this machine allows"}[config.type]
            raise InputError(source, f"no Dask worker started within {config.start_timeout_s:g} s "
                                     f"(start_timeout_s): check {where}; the cluster's jobs were cancelled")
        try:
            client.wait_for_workers(1, timeout=min(1.0, left))
            return
        except TimeoutError:
            continue
    raise InputError(source, f"the batch system refused the worker jobs: {refusals[0]}")


@contextmanager
def start_cluster(config: ClusterConfig, source: str | None, refusals: list[str]) -> Iterator[Any]:
    """The cluster of `config`, closed at the end (its batch jobs cancelled); a worker job the batch
    system refuses is recorded in `refusals` (the submit command's error)."""
    if config.type == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=config.workers, threads_per_worker=config.threads_per_worker,
                               processes=True, dashboard_address=None, silence_logs=logging.ERROR,
                               **config.options)
    else:
        import dask_jobqueue

        cls = getattr(dask_jobqueue, JOBQUEUE[config.type])
        try:
            cluster = cls(job_cls=_recording_refusals(cls.job_cls, refusals), **config.options)
        except (TypeError, ValueError) as exc:
            raise InputError(source or "cluster", f"options for {JOBQUEUE[config.type]}: {exc}") from None
        cluster.scale(jobs=config.workers)
    with cluster:
        yield cluster


def _recording_refusals(job_cls: type, refusals: list[str]) -> type:
    """dask_jobqueue's `job_cls` whose start, when the submit command fails, records its error
    instead of raising in the cluster's event loop (a traceback in the log, and a cluster that no
    longer closes cleanly): the job stands as one without a job id, which closing skips."""
    from distributed.core import Status

    class Job(job_cls):
        async def start(self):
            try:
                await super().start()
            except RuntimeError as exc:       # dask_jobqueue's "Command exited with non-zero exit code"
                lines = [line.strip() for line in str(exc).split("stderr:")[-1].splitlines() if line.strip()]
                refusals.append(lines[0][:200] if lines else str(exc).splitlines()[0])
                self.status = Status.running

        async def close(self):
            await super().close()
            self.status = Status.closed

    return Job
