"""A task and what one attempt at it comes to: the shape every executor sees.

`attempt` runs where the task runs and never raises; `settle` decides, where the tasks were
submitted, whether an attempt's outcome is final (a result, or a `Failed`) or is to be retried.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

from engine.errors import InputError


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    events: int = 0
    """Work units it stands for (events), for the progress bar's rate."""


@dataclass(frozen=True)
class Failed:
    """A task that failed for good: `source` and `problem` as in InputError, `bad_input` if so."""

    name: str
    source: str
    problem: str
    bad_input: bool

    def line(self) -> str:
        return f"{self.name}: {self.source}: {self.problem}" if self.bad_input else f"{self.name}: {self.problem}"


def attempt(task: Task) -> tuple[str, Any]:
    """Call the task where it runs: ("ok", result), ("input_error", (source, problem)) or
    ("error", last line of the traceback). Never raises, so every executor sees one shape."""
    try:
        return "ok", task.fn(*task.args)
    except InputError as exc:
        return "input_error", (exc.source, exc.problem)
    except Exception as exc:  # noqa: BLE001 - reported by name, retried
        return "error", _describe(exc)


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}{': ' + text[0][:200] if text else ''}{at}"


def settle(task: Task, outcome: tuple[str, Any], tries: int, retries: int) -> tuple[bool, Any]:
    """(final, value) for one attempt's outcome: the result, a Failed, or (False, None) to retry."""
    kind, value = outcome
    if kind == "ok":
        return True, value
    if kind == "input_error":
        return True, Failed(task.name, value[0], value[1], bad_input=True)
    if tries <= retries:
        return False, None
    suffix = f" (after {tries} attempts)" if tries > 1 else ""
    return True, Failed(task.name, task.name, f"{value}{suffix}", bad_input=False)
