"""Reconfiguration operations as JSON, for the HTTP API and the CLI.

One JSON object per primitive of :mod:`rheostat.plan.reconfig`::

    {"op": "rescale", "step": "count", "parallelism": 4}
    {"op": "move", "step": "count", "groups": [0, 1, "10-20"], "to_task": 1}
    {"op": "update", "step": "enrich", "function": "module.path:function_name"}
    {"op": "knob", "step": "score", "name": "threshold", "value": 0.7}
    {"op": "place", "task": "count#1", "worker": 0}
    {"op": "place_on_node", "task": "count#1", "node": "10.0.0.7"}

Key groups are ints or inclusive ``"a-b"`` ranges. ``update`` imports its function's
module, which runs that module's code: only after every operation has been read and, given
the job's steps, checked against them. Bad input raises :class:`ValueError` naming the
operation's index.

>>> ops_from_json([{"op": "rescale", "step": "count", "parallelism": 4},
...                {"op": "move", "step": "count", "groups": [5, "0-2"], "to_task": 1}])
[Rescale(step='count', parallelism=4), MoveKeyGroups(step='count', groups=(0, 1, 2, 5), to_task=1)]
>>> op_to_json(SetKnob("score", "threshold", 0.7))
{'op': 'knob', 'step': 'score', 'name': 'threshold', 'value': 0.7}
>>> parse_groups("0-3,8")
(0, 1, 2, 3, 8)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from rheostat.plan.reconfig import (
    UPDATABLE_KINDS,
    MoveKeyGroups,
    Operation,
    Place,
    Rescale,
    SetKnob,
    UpdateFunction,
)

__all__ = ["function_path", "op_to_json", "ops_from_json", "parse_groups", "resolve_function"]

#: The fields of each operation, besides ``op``.
FIELDS: dict[str, tuple[str, ...]] = {
    "rescale": ("step", "parallelism"),
    "move": ("step", "groups", "to_task"),
    "update": ("step", "function"),
    "knob": ("step", "name", "value"),
    "place": ("task", "worker"),
    "place_on_node": ("task", "node"),
}
#: The most key groups one ``move`` may name (guards against huge ranges).
MAX_GROUPS = 1 << 20


class _Bad(ValueError):
    """A problem in one operation; :func:`ops_from_json` adds which one."""


def ops_from_json(items: Any, steps: Mapping[str, str] | None = None) -> list[Operation]:
    """The operations described by ``items``, a non-empty list of JSON objects.

    With ``steps`` (the job's step ids -> kinds), every step named must be one of them,
    and an ``update``'s one whose function can change. Nothing is imported before all
    operations are read and checked.
    """
    if not isinstance(items, list) or not items:
        raise ValueError('give a non-empty list of operations, e.g. [{"op": "rescale", '
                         f'"step": "count", "parallelism": 4}}]; got {_short(items)}')
    read = [_at(i, item, _one, item) for i, item in enumerate(items)]
    if steps is not None:
        for i, op in enumerate(read):
            _at(i, items[i], _check_step, op, steps)
    return [_at(i, items[i], _resolve, op) for i, op in enumerate(read)]


def _at(index: int, item: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; its :class:`_Bad` as a ``ValueError`` naming operation ``index``."""
    try:
        return fn(*args)
    except _Bad as exc:
        kind = item.get("op") if isinstance(item, dict) else None
        kind = kind if isinstance(kind, str) and kind in FIELDS else None
        raise ValueError(f"op {index}" + (f" ({kind})" if kind else "") + f": {exc}") from None


def _one(item: Any) -> Operation:
    """The operation ``item`` describes; an ``update``'s function is still its path."""
    if not isinstance(item, dict):
        raise _Bad(f"must be a JSON object, got {_short(item)}")
    kind = item.get("op")
    if not isinstance(kind, str) or kind not in FIELDS:
        raise _Bad(f'"op" must be one of {sorted(FIELDS)}, got {_short(kind)}')
    _check_fields(item, FIELDS[kind])
    return _PARSERS[kind](item)


def _check_step(op: Operation, steps: Mapping[str, str]) -> None:
    step = getattr(op, "step", None)
    if step is None:  # place: names a task, and imports nothing
        return
    if step not in steps:
        raise _Bad(f"the job has no step {step!r}; its steps: {_short(sorted(steps), 200)}")
    if isinstance(op, UpdateFunction) and steps[step] not in UPDATABLE_KINDS:
        raise _Bad(f"step {step!r} ({steps[step]}) has no function to update; functions "
                   f"of {sorted(UPDATABLE_KINDS)} steps can")


def _resolve(op: Operation) -> Operation:
    if isinstance(op, UpdateFunction) and isinstance(op.function, str):
        return dataclasses.replace(op, function=resolve_function(op.function))
    return op


def _check_fields(item: dict[str, Any], wanted: tuple[str, ...]) -> None:
    missing = [f for f in wanted if f not in item]
    unknown = sorted(set(item) - {"op", *wanted})
    if missing or unknown:
        what = "; ".join(filter(None, [missing and f"missing {missing}",
                                       unknown and f"unknown {unknown}"]))
        raise _Bad(f"{what}: it takes exactly {list(wanted)}")


def _rescale(item: dict[str, Any]) -> Rescale:
    return Rescale(_name(item, "step"), _int(item, "parallelism", 1))


def _move(item: dict[str, Any]) -> MoveKeyGroups:
    groups = item["groups"]
    if not isinstance(groups, list) or not groups:
        raise _Bad(f'"groups" must be a non-empty list of key groups (ints or "a-b" ranges), '
                   f"got {_short(groups)}")
    return MoveKeyGroups(_name(item, "step"), _groups(groups), _int(item, "to_task", 0))


def _update(item: dict[str, Any]) -> UpdateFunction:
    path = item["function"]
    if not isinstance(path, str):
        raise _Bad(f'"function" must be "module.path:function_name", got {_short(path)}')
    _split_path(path)
    return UpdateFunction(_name(item, "step"), path)  # imported once all are checked


def _knob(item: dict[str, Any]) -> SetKnob:
    name, value = _name(item, "name"), item["value"]
    if not name.isidentifier():
        raise _Bad(f'"name" must be a knob name (an identifier), got {name!r}')
    if value is not None and not isinstance(value, bool | int | float | str):
        raise _Bad(f'"value" must be a number, string, boolean or null, got {_short(value)}')
    return SetKnob(_name(item, "step"), name, value)


def _place(item: dict[str, Any]) -> Place:
    return Place(_name(item, "task"), _int(item, "worker", 0))


def _place_on_node(item: dict[str, Any]) -> Place:
    return Place(_name(item, "task"), node=_name(item, "node"))


_PARSERS: dict[str, Callable[[dict[str, Any]], Operation]] = {
    "rescale": _rescale, "move": _move, "update": _update, "knob": _knob, "place": _place,
    "place_on_node": _place_on_node,
}


def _name(item: dict[str, Any], field: str) -> str:
    value = item[field]
    if not isinstance(value, str) or not value:
        raise _Bad(f'"{field}" must be a non-empty string, got {_short(value)}')
    return value


def _int(item: dict[str, Any], field: str, least: int) -> int:
    value = item[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise _Bad(f'"{field}" must be an integer >= {least}, got {_short(value)}')
    return value


# --- key groups -------------------------------------------------------------------------


def parse_groups(text: str) -> tuple[int, ...]:
    """Key groups from ``"0-1023,2048"``: comma-separated numbers and inclusive ranges."""
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise ValueError(f'give key groups like "0-1023,2048", got {text!r}')
    try:
        return _groups([p for p in parts if p])
    except _Bad as exc:
        raise ValueError(str(exc)) from None


def _groups(items: list[Any]) -> tuple[int, ...]:
    out: set[int] = set()
    for item in items:
        low, high = _bounds(item)
        if high - low + 1 + len(out) > MAX_GROUPS:
            raise _Bad(f"too many key groups (at most {MAX_GROUPS})")
        out.update(range(low, high + 1))
    return tuple(sorted(out))


def _bounds(item: Any) -> tuple[int, int]:
    """``(low, high)`` of one key group (int or ``"7"``) or inclusive range ``"a-b"``."""
    if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return item, item
    if isinstance(item, str):
        low, dash, high = (p.strip() for p in item.partition("-"))
        if _digits(low) and (not dash or _digits(high)):
            a, b = int(low), int(high) if dash else int(low)
            if a <= b:
                return a, b
    raise _Bad(f'a key group is an integer >= 0 or an inclusive range "a-b" with a <= b; '
               f"got {_short(item)}")


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9


# --- functions --------------------------------------------------------------------------


def resolve_function(path: str) -> Any:
    """The object ``"module.path:name"`` names: a function, or a keyed process.

    ``name`` may be dotted (``module:Class.method``). It must be callable or have a
    ``process`` method (a ``KeyedProcess`` instance).
    """
    module_name, attr = _split_path(path)
    try:
        target: Any = importlib.import_module(module_name.strip())
    except Exception as exc:  # ImportError, or the module raised while importing
        raise _Bad(f"cannot import module {module_name!r} for {path!r}: "
                   f"{type(exc).__name__}: {exc}") from None
    for part in attr.strip().split("."):
        if not hasattr(target, part):
            raise _Bad(f"module {module_name!r} has no {attr.strip()!r} (no attribute "
                       f"{part!r}); check the name after the colon in {path!r}")
        target = getattr(target, part)
    if not callable(target) and not callable(getattr(target, "process", None)):
        raise _Bad(f"{path!r} is a {type(target).__name__}, not a function or keyed process")
    return target


def _split_path(path: str) -> tuple[str, str]:
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name.strip() or not attr.strip():
        raise _Bad(f'"function" must be "module.path:function_name", got {path!r}')
    return module_name, attr


def function_path(fn: Any) -> str:
    """``"module:qualname"`` of ``fn`` (of its class for an instance without a name)."""
    named = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(named, '__module__', '?')}:{named.__qualname__}"


# --- back to JSON -----------------------------------------------------------------------


def op_to_json(op: Operation) -> dict[str, Any]:
    """The JSON object of ``op`` (as :func:`ops_from_json` reads it)."""
    if isinstance(op, Rescale):
        return {"op": "rescale", "step": op.step, "parallelism": op.parallelism}
    if isinstance(op, MoveKeyGroups):
        return {"op": "move", "step": op.step, "groups": _ranges(op.groups),
                "to_task": op.to_task}
    if isinstance(op, UpdateFunction):
        return {"op": "update", "step": op.step, "function": function_path(op.function)}
    if isinstance(op, SetKnob):
        return {"op": "knob", "step": op.step, "name": op.name, "value": op.value}
    if isinstance(op, Place) and op.node is not None:
        return {"op": "place_on_node", "task": op.task, "node": op.node}
    if isinstance(op, Place):
        return {"op": "place", "task": op.task, "worker": op.worker}
    raise TypeError(f"not a reconfiguration operation: {op!r}")


def _ranges(groups: tuple[int, ...]) -> list[int | str]:
    """Runs of consecutive groups as ``"a-b"``, single groups as ints.

    >>> _ranges((0, 1, 2, 5, 7, 8))
    ['0-2', 5, '7-8']
    """
    out: list[int | str] = []
    ordered = sorted(set(groups))
    start = 0
    for i, g in enumerate(ordered):
        if i + 1 == len(ordered) or ordered[i + 1] != g + 1:
            first = ordered[start]
            out.append(first if first == g else f"{first}-{g}")
            start = i + 1
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
