"""Ratios to a reference value that may be near zero: NaN plus a flag, never a huge number (issue 13).

A metric of the form x / ref or (x − ref) / ref (PrivLeak, GNNDelete's MI ratio, the run-time ratio to the oracle)
explodes when ``ref`` is near zero, and a table then shows an enormous number that looks like a result. Such
metrics call :func:`guarded_ratio` with a documented ``eps`` in the reference's units; below it they write NaN for
the value and ``<key>.near_zero_denominator = 1.0`` (:func:`flag_key`) next to it, which the report and the
verdicts read.
"""

from __future__ import annotations

import math

#: suffix of the flag written next to a ratio whose denominator was near zero (value 1.0)
FLAG_SUFFIX = ".near_zero_denominator"


def flag_key(key: str) -> str:
    """The flag key of ratio ``key``: ``"privleak"`` → ``"privleak.near_zero_denominator"``."""
    return key + FLAG_SUFFIX


def guarded_ratio(numerator: float, denominator: float, eps: float) -> tuple[float, bool]:
    """``(numerator / denominator, False)``, or ``(NaN, True)`` when ``|denominator| < eps`` or either is not finite.

    Args:
        numerator, denominator: floats in the same units.  eps: > 0, the smallest |denominator| (same units) for
            which the ratio is reported.
    """
    n, d = float(numerator), float(denominator)
    if not (math.isfinite(n) and math.isfinite(d)) or abs(d) < eps:
        return float("nan"), True
    return n / d, False
