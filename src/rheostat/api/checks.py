"""Checks run before a job starts: every step's functions must survive pickling.

A function that captures a lock, an open file or a client cannot travel to worker
processes; the error names the step and the captured object so the user can fix it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import cloudpickle

from rheostat.plan.errors import FlowError
from rheostat.plan.logical import Step


def check_serialisable(steps: Iterable[Step]) -> None:
    """Raise :class:`FlowError` naming the step and culprit when a step cannot be pickled."""
    for step in steps:
        try:
            cloudpickle.dumps(step)
        except Exception as exc:
            culprit = _find_culprit(step)
            raise FlowError(
                f"step {step.step_id!r} cannot be sent to worker processes: {culprit}"
                f" ({type(exc).__name__}: {exc}). Create such objects inside the function "
                "(or in a setup hook) instead of capturing them."
            ) from exc


def _find_culprit(step: Step) -> str:
    for field_name, value in vars(step).items():
        if _pickles(value):
            continue
        for name, captured in _captured(value):
            if not _pickles(captured):
                return f"{field_name} captures {name!r} = {captured!r:.80}"
        return f"its {field_name} {value!r:.80} cannot be pickled"
    return "an unknown part cannot be pickled"


def _captured(fn: Any) -> list[tuple[str, Any]]:
    if not callable(fn):
        return []
    target = fn if inspect.isfunction(fn) else getattr(fn, "__call__", None)  # noqa: B004
    out: list[tuple[str, Any]] = []
    if inspect.isfunction(target) or inspect.ismethod(target):
        cv = inspect.getclosurevars(target)
        out += list(cv.nonlocals.items()) + list(cv.globals.items())
    if not inspect.isfunction(fn):
        out += list(getattr(fn, "__dict__", {}).items())
    return out


def _pickles(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
        return True
    except Exception:
        return False
