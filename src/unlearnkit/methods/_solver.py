"""One record shape for iterative (and direct) solvers, so a result says whether its numbers come from a solve that
converged.

Methods that solve a system or an optimisation inside ``unlearn`` put :func:`solver_note`'s dict under
``notes["solver"]`` of their :class:`~unlearnkit.methods.base.UnlearnResult`; the runner turns
``converged: False`` into the ``unconverged`` verdict (issue 13).
"""

from __future__ import annotations

import math
from typing import Any


def solver_note(name: str, *, residual: float, iterations: int, tolerance: float, **extra: Any) -> dict[str, Any]:
    """The ``notes["solver"]`` record of one solve.

    Args:
        name: the solver (``"lissa"``, ``"cholesky"``, ...).
        residual: the final relative residual (dimensionless, ≥ 0; what it is relative to is said in ``extra`` or
            the method's docstring); NaN/inf count as not converged.
        iterations: iterations (or solves) performed.
        tolerance: the largest residual accepted as converged.
        extra: further JSON-serialisable fields (damping, scale, max_iterations, ...).

    Returns:
        ``{"name", "residual", "iterations", "tolerance", "converged", **extra}``; ``converged`` is
        ``residual <= tolerance`` for a finite residual, else False.
    """
    r = float(residual)
    return {"name": name, "residual": r, "iterations": int(iterations), "tolerance": float(tolerance),
            "converged": bool(math.isfinite(r) and r <= tolerance), **extra}
