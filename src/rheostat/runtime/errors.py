"""Errors raised while a job runs, carrying what a user needs to find the cause."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa


class UserFunctionError(RuntimeError):
    """A user function raised. Names the step, the record or batch, and the traceback."""

    def __init__(self, step_id: str, what: str, cause: BaseException, traceback_text: str) -> None:
        self.step_id = step_id
        self.what = what
        self.cause_text = f"{type(cause).__name__}: {cause}"
        self.traceback_text = traceback_text
        super().__init__(
            f"step {step_id!r} failed on {what}: {self.cause_text}\n"
            f"--- traceback of the user function ---\n{traceback_text}"
            "(set on_error='skip' or 'dead_letter' on the step to keep going past bad rows)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.step_id, self.what, self.cause_text, self.traceback_text))


def _rebuild(step_id: str, what: str, cause_text: str, tb: str) -> UserFunctionError:
    err = UserFunctionError.__new__(UserFunctionError)
    err.step_id, err.what, err.cause_text, err.traceback_text = step_id, what, cause_text, tb
    RuntimeError.__init__(
        err, f"step {step_id!r} failed on {what}: {cause_text}\n"
        f"--- traceback of the user function ---\n{tb}"
        "(set on_error='skip' or 'dead_letter' on the step to keep going past bad rows)"
    )
    return err


def describe_record(row: dict[str, Any]) -> str:
    """A short, readable rendering of one row for error messages."""
    text = json.dumps(row, default=str)
    return f"record {text[:500]}{'...' if len(text) > 500 else ''}"


def describe_batch(batch: pa.RecordBatch) -> str:
    head = [{k: v for k, v in row.items() if k != "_ts"} for row in batch.slice(0, 3).to_pylist()]
    return f"a batch of {batch.num_rows} rows (first rows: {json.dumps(head, default=str)[:500]})"


class JobFailed(RuntimeError):
    """The job stopped because a task failed; ``__cause__`` holds the task's error."""
