"""Errors a user can fix: bad input files, bad options, bad configs.

Anything raised as `InputError` reaches the user as one line on stderr and exit code 2,
with no traceback (see `engine.__main__`). Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A problem with something the user gave us. The message names the input and the problem."""

    def __init__(self, source: object, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
