"""What a policy returns: one :class:`Decision` per step it looked at, "none" included.

A decision is a value: it says what to do (``action``), to what (``target_parallelism``,
``moves``), what the policy expects of it (``predicted_capacity_per_s``), by which model,
why (``reason``, a sentence for a person) and from which figures (``inputs``). The loop
carries it out, or does not (a stabilisation rule), and writes it to the decisions table
either way.

>>> d = Decision("map", "rescale", parallelism=2, target_parallelism=4,
...              predicted_capacity_per_s=4000.0, reason="input 3400 rows/s needs 4 tasks")
>>> d.changes, d.inputs
(True, mappingproxy({}))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rheostat.policy.snapshot import frozen_mapping

Action = Literal["none", "rescale", "move", "report_hot_key"]
Model = Literal["linear", "curve"]


@dataclass(frozen=True)
class Decision:
    """One step's verdict from one evaluation of one policy.

    ``target_parallelism`` is what to run (equal to ``parallelism`` unless the action is
    "rescale"); ``ideal_parallelism`` is what the model sized before limits and dead bands,
    so a held decision still says what the policy would do. ``moves`` maps a key group to
    the index of its new owner.
    """

    step_id: str
    action: Action
    parallelism: int
    target_parallelism: int
    reason: str
    ideal_parallelism: int | None = None
    moves: Mapping[int, int] = field(default_factory=dict)
    predicted_capacity_per_s: float | None = None
    target_rate_per_s: float | None = None
    model: Model = "linear"
    policy: str = ""
    inputs: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "moves", frozen_mapping(self.moves))
        object.__setattr__(self, "inputs", frozen_mapping(self.inputs))
        if self.action != "rescale" and self.target_parallelism != self.parallelism:
            raise ValueError(f"{self.step_id}: a {self.action!r} decision keeps the "
                             f"parallelism ({self.parallelism}), got {self.target_parallelism}")
        if self.action == "move" and not self.moves:
            raise ValueError(f"{self.step_id}: a 'move' decision needs moves")

    @property
    def changes(self) -> bool:
        """Whether carrying it out would reconfigure anything."""
        return self.action == "rescale" or bool(self.moves)


def none(step_id: str, parallelism: int, reason: str, **fields: object) -> Decision:
    """A "no change" decision (still a row: it says why nothing changes).

    >>> none("src", 2, "sources are not rescaled").target_parallelism
    2
    """
    return Decision(step_id, "none", parallelism, parallelism, reason, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: a decision per step, and the policy's memory to pass to the next."""

    decisions: tuple[Decision, ...]
    memory: Any = None

    def of(self, step_id: str) -> Decision:
        """The decision about ``step_id``."""
        return next(d for d in self.decisions if d.step_id == step_id)
