"""Capacity models: rows per second a step can take at parallelism ``p``.

:class:`LinearModel` is DS2's assumption: ``p`` times the true rate per task.
:class:`CapacityCurve` is what a step has been measured at (parallelism -> capacity), kept
between decisions as an immutable value (ContTune, StreamTune): once two parallelisms have
been observed it replaces the linear assumption.

The curve is **piecewise linear in log-log space**: between two measured parallelisms,
``capacity = a * p**b`` through both points; beyond the measured range, the end segment's
exponent, clamped to ``[0, 1]``. Why: sub-linear scaling (contention, coordination) is close
to a power law over the range an autoscaler moves in, so two points already predict the
next parallelism well; interpolating piece by piece stays exact at every measured point
(one global fit would not, where the true curve bends); and the clamp keeps a noisy pair of
points from extrapolating super-linear gains or, beyond the data, a collapse. A retrograde
curve measured inside its range stays retrograde, and sizing then stops at its peak.

>>> curve = CapacityCurve().observe(2, 2000.0, 0.0).observe(8, 4000.0, 1.0)
>>> round(curve.capacity(4))                      # 2000 * (4/2) ** 0.5
2828
>>> curve.smallest(5000.0, 1, 64)                 # 4000 * (p/8) ** 0.5 >= 5000
13
>>> LinearModel(1000.0).smallest(3500.0, 1, 64)
4
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LinearModel:
    """``capacity(p) = p * rate_per_task``."""

    rate_per_task: float
    name: str = "linear"

    def capacity(self, p: int) -> float:
        return p * self.rate_per_task

    def smallest(self, need: float, lo: int, hi: int) -> int | None:
        """The least ``p`` in ``lo..hi`` with ``capacity(p) >= need``; ``None`` if none."""
        if self.rate_per_task <= 0:
            return lo if need <= 0 else None
        p = max(lo, math.ceil(need / self.rate_per_task - 1e-9))
        return p if p <= hi else None


@dataclass(frozen=True)
class CurvePoint:
    parallelism: int
    capacity_per_s: float
    time_s: float


@dataclass(frozen=True)
class CapacityCurve:
    """Measured capacities, one point per parallelism, sorted by parallelism."""

    points: tuple[CurvePoint, ...] = ()
    name: str = "curve"

    @property
    def fitted(self) -> bool:
        """Whether two parallelisms have been measured (so the curve can stand alone)."""
        return len(self.points) >= 2

    def observe(self, p: int, capacity: float, time_s: float, alpha: float = 1.0) -> CapacityCurve:
        """The curve with a measurement at ``p``, averaged into an earlier one by ``alpha``."""
        old = {pt.parallelism: pt for pt in self.points}
        if p in old:
            capacity = alpha * capacity + (1 - alpha) * old[p].capacity_per_s
        old[p] = CurvePoint(p, capacity, time_s)
        return CapacityCurve(tuple(old[k] for k in sorted(old)))

    def forget_before(self, time_s: float) -> CapacityCurve:
        """The curve without points measured before ``time_s`` (the job may have changed)."""
        return CapacityCurve(tuple(pt for pt in self.points if pt.time_s >= time_s))

    def capacity(self, p: int) -> float:
        pts = self.points
        if not self.fitted:
            raise ValueError("a capacity curve needs two parallelisms before it predicts")
        if p <= pts[0].parallelism:
            return _power(pts[0], pts[1], p, clamp=True)
        if p >= pts[-1].parallelism:
            return _power(pts[-2], pts[-1], p, clamp=True)
        i = next(i for i, pt in enumerate(pts) if pt.parallelism >= p)
        return _power(pts[i - 1], pts[i], p, clamp=False)

    def smallest(self, need: float, lo: int, hi: int) -> int | None:
        """The least ``p`` in ``lo..hi`` with ``capacity(p) >= need``; ``None`` if none."""
        last = self.points[-1]
        for p in range(lo, min(hi, last.parallelism) + 1):
            if self.capacity(p) >= need:
                return p
        b = _exponent(self.points[-2], last, clamp=True)
        if b <= 0 or last.capacity_per_s <= 0:
            return None
        p = max(lo, last.parallelism + 1,
                math.ceil(last.parallelism * (need / last.capacity_per_s) ** (1 / b) - 1e-9))
        while p <= hi and self.capacity(p) < need:  # at most a step for rounding
            p += 1
        return p if p <= hi else None

    def peak(self, lo: int, hi: int) -> int:
        """The least ``p`` in ``lo..hi`` at the curve's highest capacity there."""
        top = min(hi, max(lo, self.points[-1].parallelism))
        best = max(range(lo, top + 1), key=lambda p: (self.capacity(p), -p))
        return hi if self.capacity(hi) > self.capacity(best) else best


def _exponent(a: CurvePoint, b: CurvePoint, clamp: bool) -> float:
    if a.capacity_per_s <= 0 or b.capacity_per_s <= 0:
        return 1.0
    e = math.log(b.capacity_per_s / a.capacity_per_s) / math.log(b.parallelism / a.parallelism)
    return min(1.0, max(0.0, e)) if clamp else e


def _power(a: CurvePoint, b: CurvePoint, p: int, clamp: bool) -> float:
    """``capacity(p)`` on the power law through ``a`` and ``b`` (anchored at the nearer)."""
    anchor = a if abs(p - a.parallelism) <= abs(p - b.parallelism) else b
    return anchor.capacity_per_s * (p / anchor.parallelism) ** _exponent(a, b, clamp)
