"""Verdicts: what a result row means, judged against the oracle θ_r and the original model θ_o of the same point.

A row's metrics alone do not say whether the method did its job: a method that returns θ_o unchanged, one that
destroys the model, and one that "forgets" far more than retraining would, all produce plausible-looking numbers.
Every method row is therefore given one verdict:

=================  ==============================================================================================
``diverged``       the run diverged (NaN / inf), or a chained earlier point did
``error``          the method failed (see the row's error)
``unconverged``    an iterative solver of the method stopped before its tolerance (``notes["solver"]``)
``inexact``        an exact method's model differs from its own retrain on D_r, or was trained on a forgotten id
``utility-collapse``  a utility metric lost more than half of θ_r's margin above chance (e.g. RA of a model that
                   fits D_r falls towards 1/K)
``inert``          the weights are θ_o's (and no inference-time policy), or every forget metric is within noise of
                   θ_o's while θ_o is measurably away from θ_r
``over-unlearned`` a forget metric went past the oracle's by more than the noise, away from θ_o (forgets more than a
                   model that never saw D_f: UA above θ_r's, a membership signal below it)
``under-unlearned``  the forget metrics closed less than half of θ_o's distance to θ_r
``ok``             none of the above
=================  ==============================================================================================

"Noise" (the tolerance of a metric) is, per row, twice the binomial standard error of a percentage over the set it is
measured on (n = |D_f|, |D_r|, |D_t|), with a floor; across seeds (the summary), twice the larger seed standard
deviation of the method's and the oracle's values, or the per-row tolerance if larger.

Which metrics are forget metrics (and in which direction a larger value means more forgetting) and which are utility
metrics (and their chance level) is the track's :class:`VerdictSpec`, stored in every row (``verdict_spec``) so that
reports can recompute verdicts from result files alone.

This module sits beside :mod:`unlearnkit.results` (no torch; reports import it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS: tuple[str, ...] = ("ok", "inert", "under-unlearned", "over-unlearned", "utility-collapse", "unconverged",
                             "inexact", "diverged", "error")


#: the remedy the pre-flight suggests when θ_o and θ_r agree on D_f (tracks give their own as VerdictSpec.advice)
CLASSIFIER_ADVICE = "use a larger forget set, a model that fits its training set, or a class scenario"


@dataclass(frozen=True)
class VerdictSpec:
    """How a track's metrics are judged.

    Attributes:
        forget: metric key → +1 if a larger value means more forgotten (UA, MIA-efficacy), −1 if smaller does
            (forget accuracy, forget-set likelihood, an MIA AUC).
        utility: metric key → its chance level (a model that learned nothing); larger is better.
        n: metric key → the number of samples a percentage is measured on (binomial standard error); absent = no
            per-row noise estimate beyond ``floor``.
        floor: metric key → the smallest tolerance (the metric's unit); default ``default_floor``.
        default_floor: tolerance floor of keys without their own.
        percent: the metrics with ``n`` are percentages (0–100) rather than fractions (0–1).
        refuse_untrained: a θ_o at chance level stops the run (classifiers, graphs); False makes it a warning (tracks
            whose utility metric can be 0 for a model that learned, e.g. a harmonic mean of several LLM numbers).
        advice: what the user can do when θ_o and θ_r agree on the forget set (the track's own remedy); empty = the
            classifier advice.
    """

    forget: Mapping[str, int] = field(default_factory=dict)
    utility: Mapping[str, float] = field(default_factory=dict)
    n: Mapping[str, int] = field(default_factory=dict)
    floor: Mapping[str, float] = field(default_factory=dict)
    default_floor: float = 0.5
    percent: bool = True
    refuse_untrained: bool = True
    advice: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> VerdictSpec | None:
        if not isinstance(d, Mapping):
            return None
        try:
            return cls(forget=dict(d.get("forget") or {}), utility=dict(d.get("utility") or {}),
                       n=dict(d.get("n") or {}), floor=dict(d.get("floor") or {}),
                       default_floor=float(d.get("default_floor", 0.5)), percent=bool(d.get("percent", True)),
                       refuse_untrained=bool(d.get("refuse_untrained", True)), advice=str(d.get("advice", "")))
        except (TypeError, ValueError):
            return None

    def tolerance(self, key: str, ref: float) -> float:
        """Per-row tolerance of ``key`` around the reference value ``ref``: max(floor, 2 × binomial SE)."""
        floor = float(self.floor.get(key, self.default_floor))
        n = self.n.get(key)
        if not n or not math.isfinite(ref):
            return floor
        scale = 100.0 if self.percent else 1.0
        p = min(max(ref / scale, 0.0), 1.0)
        p = min(max(p, 1.0 / (n + 2)), 1 - 1.0 / (n + 2))  # a rule-of-succession floor: 0 % has noise too
        return max(floor, 2.0 * scale * math.sqrt(p * (1 - p) / n))


def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return float("nan")
    return float(x)


def judge(metrics: Mapping[str, Any], oracle: Mapping[str, Any], original: Mapping[str, Any], spec: VerdictSpec, *,
          tolerance: Mapping[str, float] | None = None, same_weights_as_original: bool = False,
          has_policy: bool = False, notes: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """The verdict of one method's metrics (or means) against θ_r's and θ_o's, with the reasons.

    Args:
        metrics, oracle, original: metric key → value of θ_u, θ_r and θ_o at the same point.
        tolerance: key → tolerance; default the per-row tolerance of ``spec`` around θ_r's value.
        same_weights_as_original: θ_u's weights are bit-identical to θ_o's.
        has_policy: θ_u carries an inference-time policy (identical weights are then not inert by themselves).
        notes: the row's notes (solver convergence).

    Returns:
        (verdict, reasons): one of :data:`VERDICTS` and short human-readable reasons.
    """
    def tol(k: str) -> float:
        if tolerance is not None and k in tolerance and math.isfinite(tolerance[k]):
            return float(tolerance[k])
        return spec.tolerance(k, _num(oracle.get(k)))

    reasons: list[str] = []
    for name, solver in _solvers(notes or {}):
        if solver.get("converged") is False:
            return "unconverged", [f"{name} stopped at residual {solver.get('residual')} > tolerance "
                                   f"{solver.get('tolerance')} after {solver.get('iterations')} iterations"]
    for k, chance in spec.utility.items():
        u, r = _num(metrics.get(k)), _num(oracle.get(k))
        if not (math.isfinite(u) and math.isfinite(r)):
            continue
        margin = r - float(chance)
        if margin > 4 * tol(k) and u <= float(chance) + 0.5 * margin:
            reasons.append(f"{k} {u:.4g} fell from θ_r's {r:.4g} to within half of its margin over chance "
                           f"({float(chance):.4g})")
    if reasons:
        return "utility-collapse", reasons
    keys = [k for k in spec.forget if all(math.isfinite(_num(m.get(k))) for m in (metrics, oracle, original))]
    if same_weights_as_original and not has_policy:
        return "inert", ["the weights are θ_o's (bit-identical)"]
    if not keys:
        return "ok", ["no forget metric to judge"]
    to_do = [k for k in keys if abs(_num(original[k]) - _num(oracle[k])) > tol(k)]
    if to_do and all(abs(_num(metrics[k]) - _num(original[k])) <= tol(k) for k in keys):
        return "inert", [f"every forget metric within noise of θ_o's ({', '.join(keys)})"]
    over = []
    for k in keys:
        d = spec.forget[k]
        past = d * (_num(metrics[k]) - _num(oracle[k]))
        if past > tol(k) and d * (_num(metrics[k]) - _num(original[k])) > 0:
            over.append(f"{k} {_num(metrics[k]):.4g} is past θ_r's {_num(oracle[k]):.4g} by more than {tol(k):.3g}")
    if over:
        return "over-unlearned", over
    if to_do:
        def closed_share(k: str) -> float:
            u, r, o = _num(metrics[k]), _num(oracle[k]), _num(original[k])
            if (u - r) * (r - o) >= 0:  # at or past θ_r (within noise, else over-unlearned above): all closed
                return 1.0
            return 1.0 - abs(u - r) / abs(o - r)

        closed = [closed_share(k) for k in to_do]
        mean_closed = sum(closed) / len(closed)
        if mean_closed < 0.5:
            return "under-unlearned", [f"closed {100 * mean_closed:.0f} % of θ_o's distance to θ_r on "
                                       f"{', '.join(to_do)}"]
    return "ok", []


def _solvers(notes: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for key, val in notes.items():
        if isinstance(val, Mapping) and "converged" in val and ("solver" in key or "residual" in val):
            out.append((str(val.get("name", key)), val))
    return out


def seed_tolerance(spec: VerdictSpec, key: str, oracle_values: Sequence[float], method_values: Sequence[float],
                   oracle_mean: float) -> float:
    """Tolerance of ``key`` across seeds: max(per-row tolerance, 2 × the larger seed std of θ_r's and θ_u's values)."""
    def sd(v: Sequence[float]) -> float:
        v = [x for x in v if math.isfinite(x)]
        if len(v) < 2:
            return 0.0
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    return max(spec.tolerance(key, oracle_mean), 2.0 * max(sd(oracle_values), sd(method_values)))


def preflight(spec: VerdictSpec, original: Mapping[str, Any], oracle: Mapping[str, Any],
              memorisation: tuple[str, str] | None = None) -> tuple[list[str], str | None]:
    """Checks of θ_o before its unlearning is measured: ``(warnings, refusal)``.

    - refusal: every utility metric of θ_o is within noise of chance, or below half of θ_r's margin over chance —
      the target learned nothing (untrained or a random initialisation); unlearning it cannot be measured.
    - warning: every forget metric of θ_o is within noise of θ_r's — there is nothing measurable to unlearn;
    - warning (``memorisation = (forget_key, test_key)``, e.g. forget vs test accuracy): θ_o does not fit D_f better
      than unseen data.
    """
    warnings: list[str] = []
    util = [(k, c) for k, c in spec.utility.items() if math.isfinite(_num(original.get(k)))]

    def learned_nothing(k: str, chance: float) -> bool:
        # at chance within noise, or below half of the oracle's margin over chance (θ_r trains with the same recipe)
        margin_r = _num(oracle.get(k)) - chance
        need = max(spec.tolerance(k, _num(original[k])), 0.5 * margin_r if math.isfinite(margin_r) else 0.0)
        return _num(original[k]) - chance <= need

    if util and all(learned_nothing(k, float(c)) for k, c in util):
        vals = ", ".join(f"{k} {_num(original[k]):.4g} (chance {float(c):.4g})" for k, c in util)
        msg = (f"the original model θ_o performs at chance level ({vals}): it learned nothing (untrained or a random "
               "initialisation), so unlearning it cannot be measured; train it (more epochs, a larger lr) or check "
               "the data and labels")
        if spec.refuse_untrained:
            return warnings, msg
        warnings.append(msg)
    keys = [k for k in spec.forget if math.isfinite(_num(original.get(k))) and math.isfinite(_num(oracle.get(k)))]
    if keys and all(abs(_num(original[k]) - _num(oracle[k])) <= spec.tolerance(k, _num(oracle[k])) for k in keys):
        vals = ", ".join(f"{k} θ_o {_num(original[k]):.4g} vs θ_r {_num(oracle[k]):.4g}" for k in keys)
        warnings.append(f"θ_o and θ_r agree on the forget set within noise ({vals}): there is nothing measurable to "
                        "unlearn, so no method can be told apart from doing nothing; "
                        + (spec.advice or CLASSIFIER_ADVICE))
    if memorisation is not None:
        f, t = memorisation
        a, b = _num(original.get(f)), _num(original.get(t))
        if math.isfinite(a) and math.isfinite(b) and a - b <= spec.tolerance(f, a):
            warnings.append(f"θ_o does not fit D_f better than unseen data ({f} {a:.4g} vs {t} {b:.4g}): it has not "
                            "memorised the forget set, so forgetting it cannot be measured here")
    return warnings, None


__all__ = ["VERDICTS", "VerdictSpec", "judge", "preflight", "seed_tolerance"]
