"""What a task reports while it takes part in a live reconfiguration.

A task that loses key groups hands their state over (:class:`StateHandoff`); the host
passes it to the controller, which delivers it to the new owner. A task reports
:class:`TaskReconfigured` once its part is done: markers aligned, state handed over,
state it gains installed, function swapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StateHandoff:
    """The state of some key groups of ``step_id``, from ``from_task`` to ``to_task``."""

    reconfig_id: int
    step_id: str
    from_task: str
    to_task: str
    #: The operator's ``snapshot_state(groups)`` (immutable), or its encoding as bytes.
    state: Any


@dataclass(frozen=True)
class TaskReconfigured:
    reconfig_id: int
    task_id: str


@dataclass(frozen=True)
class UpdateChecked:
    """Whether this task's state passes the check of a function update (before any
    task switches); ``refusal`` says why not."""

    reconfig_id: int
    task_id: str
    refusal: str | None = None
