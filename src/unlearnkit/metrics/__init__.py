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
from unlearnkit.metrics import inference_time as _inference_time  # noqa: E402,F401  (issue 16)
from unlearnkit.metrics import moe as _moe  # noqa: E402,F401  (LLM track, issue 18)
from unlearnkit.metrics import code_secrets as _code_secrets  # noqa: E402,F401  (LLM track, issue 18)
from unlearnkit.metrics import stages as _stages  # noqa: E402,F401  (LLM track, issue 18)
from unlearnkit.metrics import hierarchy as _hierarchy  # noqa: E402,F401  (LLM track, issue 18)
from unlearnkit.metrics import continual as _continual  # noqa: E402,F401
from unlearnkit.metrics import audit_probes as _audit_probes  # noqa: E402,F401  (LLM audit: forms, in_context, ...)
from unlearnkit.metrics import hidden_probe as _hidden_probe  # noqa: E402,F401
from unlearnkit.metrics import concept_vectors as _concept_vectors  # noqa: E402,F401
from unlearnkit.metrics import rwku as _rwku  # noqa: E402,F401
from unlearnkit.metrics import generative as _generative  # noqa: E402,F401
from unlearnkit.metrics import backdoor as _backdoor  # noqa: E402,F401
from unlearnkit.metrics.gap import AVG_GAP_KEYS, avg_gap  # noqa: E402

__all__ = ["METRICS", "AVG_GAP_KEYS", "EvalContext", "Metric", "MetricOutput", "avg_gap"]
