"""Aggregations for windows: ``rs.agg.count()``, ``sum("price")``, ... and ``reduce``.

>>> sum_("price")
Agg(kind='sum', column='price', reducer=None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rheostat.plan.logical import Agg


def count(column: str | None = None) -> Agg:
    """Rows in the window, or non-null values of ``column`` when given."""
    return Agg("count", column)


def sum_(column: str) -> Agg:
    """Sum of ``column`` (nulls ignored)."""
    return Agg("sum", column)


def min_(column: str) -> Agg:
    return Agg("min", column)


def max_(column: str) -> Agg:
    return Agg("max", column)


def mean(column: str) -> Agg:
    return Agg("mean", column)


def first(column: str) -> Agg:
    """Value of ``column`` on the row with the earliest event time."""
    return Agg("first", column)


def last(column: str) -> Agg:
    """Value of ``column`` on the row with the latest event time."""
    return Agg("last", column)


def reduce(column: str, reducer: Callable[[Any, Any], Any]) -> Agg:
    """Fold ``column`` with an associative ``reducer(a, b)``. Runs Python per value: slow path."""
    if not callable(reducer):
        raise TypeError(f"reduce({column!r}, ...): reducer must be callable, got {reducer!r}")
    return Agg("reduce", column, reducer)


# The public names shadow builtins only inside this namespace: rs.agg.sum, rs.agg.min, ...
globals().update({"sum": sum_, "min": min_, "max": max_})
__all__ = ["count", "first", "last", "max", "mean", "min", "reduce", "sum"]
