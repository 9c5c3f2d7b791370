"""Metrics (registered in ``METRICS``): one file per family."""

from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

from unlearnkit.metrics import accuracy as _accuracy  # noqa: E402,F401
from unlearnkit.metrics import mia as _mia  # noqa: E402,F401
from unlearnkit.metrics import distance as _distance  # noqa: E402,F401
from unlearnkit.metrics import mia_family as _mia_family  # noqa: E402,F401
from unlearnkit.metrics import representation as _representation  # noqa: E402,F401
from unlearnkit.metrics.gap import AVG_GAP_KEYS, avg_gap  # noqa: E402

__all__ = ["METRICS", "AVG_GAP_KEYS", "EvalContext", "Metric", "MetricOutput", "avg_gap"]
