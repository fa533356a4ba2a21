"""Independent tasks (generation batches, input files, shuffle buckets) run on an executor: a
local process pool or a Dask cluster, with retries, progress and failures reported by name.

`spec` holds the options (`ExecutorSpec`, `TaskSlice`, the CLI arguments), `outcome` a task and
its attempts, `run` the runner and the local pool, `dask_backend` Dask (imported only when used).
"""
from engine.data.tasks.outcome import Failed, Task
from engine.data.tasks.run import TaskFailures, run_tasks
from engine.data.tasks.spec import (ClusterConfig, ExecutorSpec, TaskSlice, add_executor_arguments,
                                    add_slice_arguments, executor_spec, task_slice)

__all__ = ["ClusterConfig", "ExecutorSpec", "Failed", "Task", "TaskFailures", "TaskSlice",
           "add_executor_arguments", "add_slice_arguments", "executor_spec", "run_tasks", "task_slice"]
