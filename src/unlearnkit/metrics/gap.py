"""Distance of an unlearned model's metrics to the oracle's: the Avg. Gap of the SalUn tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

AVG_GAP_KEYS: tuple[str, ...] = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")


def avg_gap(metrics: Mapping[str, float], oracle: Mapping[str, float], keys: Sequence[str] = AVG_GAP_KEYS) -> float:
    """Mean absolute difference to the oracle over ``keys`` (percentage points).

    Avg. Gap = (1/|K|) Σ_{k∈K} |m_k − m_k^oracle| with K = {UA, RA, TA, MIA-efficacy} (Fan et al., SalUn, ICLR 2024,
    arXiv:2310.12508, Table 1 "Avg. Gap"). Keys missing from either side are skipped; NaN if none is present.
    Lower is better; the oracle's own gap is 0.
    """
    diffs = [abs(float(metrics[k]) - float(oracle[k])) for k in keys if k in metrics and k in oracle]
    diffs = [d for d in diffs if not math.isnan(d)]
    return sum(diffs) / len(diffs) if diffs else float("nan")
