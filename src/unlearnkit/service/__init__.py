"""Deletion service: a tamper-evident ledger (SQLite, hash-chained), a deletion service that applies requests to a
SISA ensemble in windows and survives SIGKILL, an HTTP API (FastAPI, extra ``[service]``) and executors of shard jobs.

Importing this package is light: FastAPI, uvicorn and torch-heavy modules load only when their objects are used::

    from unlearnkit.service import Ledger, verify_ledger            # sqlite3 only
    from unlearnkit.service.deletion import DeletionService          # torch
    from unlearnkit.service.http import create_app                   # FastAPI
"""

from __future__ import annotations

from typing import Any

from unlearnkit.service.ledger import Event, IdempotencyConflict, Ledger, VerifyReport, verify_ledger

_LAZY = {
    "DeletionService": "unlearnkit.service.deletion",
    "Receipt": "unlearnkit.service.deletion",
    "ServiceConfig": "unlearnkit.service.config",
    "load_service_config": "unlearnkit.service.config",
    "create_app": "unlearnkit.service.http",
    "BackgroundServer": "unlearnkit.service.http",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unlearnkit.service' has no attribute {name!r}")


__all__ = ["DeletionService", "Event", "IdempotencyConflict", "Ledger", "Receipt", "ServiceConfig",
           "VerifyReport", "create_app", "load_service_config", "verify_ledger", "BackgroundServer"]
