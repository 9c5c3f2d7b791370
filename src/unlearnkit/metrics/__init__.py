"""Metrics (registered in ``METRICS``): one file per family."""

from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

from unlearnkit.metrics import accuracy as _accuracy  # noqa: E402,F401
from unlearnkit.metrics import mia as _mia  # noqa: E402,F401
from unlearnkit.metrics import distance as _distance  # noqa: E402,F401
from unlearnkit.metrics import mia_family as _mia_family  # noqa: E402,F401
from unlearnkit.metrics import representation as _representation  # noqa: E402,F401
from unlearnkit.metrics import graph as _graph  # noqa: E402,F401
from unlearnkit.metrics import recsys as _recsys  # noqa: E402,F401
from unlearnkit.metrics import tofu as _tofu  # noqa: E402,F401  (LLM track: tofu, muse, mia_text, extraction)
from unlearnkit.metrics import muse as _muse  # noqa: E402,F401
from unlearnkit.metrics import mia_text as _mia_text  # noqa: E402,F401
from unlearnkit.metrics import extraction as _extraction  # noqa: E402,F401
from unlearnkit.metrics import lira as _lira  # noqa: E402,F401
from unlearnkit.metrics import relearn as _relearn  # noqa: E402,F401
from unlearnkit.metrics import corrective as _corrective  # noqa: E402,F401
from unlearnkit.metrics import generative as _generative  # noqa: E402,F401
from unlearnkit.metrics import backdoor as _backdoor  # noqa: E402,F401
from unlearnkit.metrics.gap import AVG_GAP_KEYS, avg_gap  # noqa: E402

__all__ = ["METRICS", "AVG_GAP_KEYS", "EvalContext", "Metric", "MetricOutput", "avg_gap"]
