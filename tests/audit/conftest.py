"""Fixtures of the audit tests (helpers in audit_fixtures.py)."""

from __future__ import annotations

import pytest

from audit_fixtures import cf


@pytest.fixture
def theta_o():
    """θ_o: the tiny Llama trained a few epochs on the synthetic task (a fresh copy)."""
    return cf.trained_model()


@pytest.fixture
def theta_r():
    """An untrained model of the same architecture (another init): stands in for θ_r."""
    return cf.tiny_model(seed=11)
