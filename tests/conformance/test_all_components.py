"""Every registered method, metric and track of every track passes the public conformance kit
(:mod:`unlearnkit.testing`), on its track's tiny task. The classifier-specific checks (+inf inputs, forget ids
honoured, typed errors of the raw API) are in test_methods.py."""

from __future__ import annotations

import pytest

from unlearnkit.bench.tracks import TRACKS
from unlearnkit.methods import METHODS
from unlearnkit.metrics import METRICS
from unlearnkit.testing import ConformanceError, check_metric, check_track, check_unlearner

pytest.importorskip("transformers")
pytest.importorskip("torch_geometric")

# Metrics that need an input the tiny tasks cannot have, with the reason; each is tested on its own elsewhere.
METRIC_EXCEPTIONS = {
    "lira": "needs shadow-model scores built beforehand (tests/golden/test_lira.py)",
    "ulira": "needs U-LiRA shadow-model scores built beforehand (tests/golden/test_lira.py)",
    "muse": "needs a MUSE-format task (tests/golden/test_muse.py, tests/llm/test_eval_configs.py)",
    "corrective": "needs a corrective scenario (tests/unit/test_corrective.py)",
}


@pytest.mark.parametrize("name", TRACKS.names())
def test_track(name):
    check_track(name)


@pytest.mark.parametrize("name", METHODS.names())
def test_method(name):
    check_unlearner(name)


@pytest.mark.parametrize("name", [n for n in METRICS.names() if n not in METRIC_EXCEPTIONS])
def test_metric(name):
    check_metric(name)


def test_metric_exceptions_are_registered_metrics():
    assert set(METRIC_EXCEPTIONS) <= set(METRICS.names())


def test_the_kit_catches_a_nondeterministic_method(monkeypatch):
    """A method whose output depends on global randomness that is not seeded fails the kit, naming the contract."""
    import os

    import torch

    from unlearnkit.methods.classifier import finetune

    real = finetune.Finetune._unlearn

    def noisy(self, model, forget, retain, engine, context):
        out = real(self, model, forget, retain, engine, context)
        with torch.no_grad():  # entropy the seed does not control
            next(out.model.parameters()).add_(1e-3 * (1 + int.from_bytes(os.urandom(2), "big")))
        return out

    monkeypatch.setattr(finetune.Finetune, "_unlearn", noisy)
    with pytest.raises(ConformanceError, match="not deterministic"):
        check_unlearner("finetune")
