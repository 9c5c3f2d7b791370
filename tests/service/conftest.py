"""Fixtures of the service tests: a deletion service over the fake SISA, and a real uvicorn server on loopback."""

from __future__ import annotations

import pytest

from service_fakes import TOKEN, make_fake_service

@pytest.fixture
def fake_service(tmp_path):
    svc = make_fake_service(tmp_path / "store")
    yield svc
    svc.close()


@pytest.fixture
def live_server(tmp_path):
    """(url, service): the HTTP API on 127.0.0.1:<free port>, over a fake SISA whose shards 'retrain' 0.05 s."""
    from unlearnkit.service.http import BackgroundServer, create_app

    svc = make_fake_service(tmp_path / "store", delay_s=0.05, window_s=0.05)
    with BackgroundServer(create_app(svc, TOKEN)) as srv:
        yield srv.url, svc
