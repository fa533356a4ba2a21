"""Tasks on Dask: an existing scheduler, or a cluster started from a ClusterConfig
(distributed.LocalCluster, or dask_jobqueue's SLURMCluster / HTCondorCluster).

A cluster's batch jobs (Slurm, HTCondor) start their workers when the batch system runs them:
the run waits for the first one (`ClusterConfig.start_timeout_s`), and closing the cluster, at the
end or on any error, cancels the jobs. The scheduler listens where the `interface` option says
(`lo` on one machine, the compute network's interface on a cluster).

Each attempt is one Dask task (`pure=False`, so a retry is a new key). Dask itself reruns a task
whose worker was lost (up to `distributed.scheduler.allowed-failures`); when it gives up
(KilledWorker) or the task raised, the attempt counts against `spec.retries` like on the local pool.
"""
from __future__ import annotations

import logging
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
    with start_cluster(spec.cluster, spec.cluster_file) as cluster, Client(cluster) as client:
        _wait_for_a_worker(client, spec.cluster, spec.cluster_file or "cluster")
        yield client


def _wait_for_a_worker(client, config: ClusterConfig, source: str) -> None:
    """Wait for the first worker (batch jobs may queue); the run goes on as more join. None within
    `config.start_timeout_s`: an InputError, and the cluster's jobs are cancelled on the way out."""
    try:
        client.wait_for_workers(1, timeout=config.start_timeout_s)
    except TimeoutError:
        where = {"slurm": "squeue and the workers' job logs", "htcondor": "condor_q and the workers' job logs",
                 "local": "the memory and processes this machine allows"}[config.type]
        raise InputError(source, f"no Dask worker started within {config.start_timeout_s:g} s (start_timeout_s): "
                                 f"check {where}; the cluster's jobs were cancelled") from None


@contextmanager
def start_cluster(config: ClusterConfig, source: str | None) -> Iterator[Any]:
    if config.type == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=config.workers, threads_per_worker=config.threads_per_worker,
                               processes=True, dashboard_address=None, silence_logs=logging.ERROR,
                               **config.options)
    else:
        import dask_jobqueue

        cls = getattr(dask_jobqueue, JOBQUEUE[config.type])
        try:
            cluster = cls(**config.options)
        except (TypeError, ValueError) as exc:
            raise InputError(source or "cluster", f"options for {JOBQUEUE[config.type]}: {exc}") from None
        cluster.scale(jobs=config.workers)
    with cluster:
        yield cluster
