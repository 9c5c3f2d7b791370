"""Tracks served by the runner (``TRACKS``): classifier, llm, graph, recsys, plus plug-ins' (entry-point group
``unlearnkit.plugins``). See :mod:`unlearnkit.bench.tracks.base`."""

from __future__ import annotations

import importlib

from unlearnkit.bench.tracks.base import TRACKS, Role, Track, TrackTask

# Registration side effects. Each track module is light at import time (heavy libraries load inside its methods).
from unlearnkit.bench.tracks import classifier as _classifier  # noqa: E402,F401

for _mod in ("llm", "graph", "recsys", "generative"):
    try:
        importlib.import_module(f"unlearnkit.bench.tracks.{_mod}")
    except ModuleNotFoundError as _err:  # a track not present in this build
        if _err.name != f"unlearnkit.bench.tracks.{_mod}":
            raise

__all__ = ["TRACKS", "Role", "Track", "TrackTask"]
