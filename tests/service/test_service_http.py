"""The HTTP API against a real uvicorn server on 127.0.0.1 (not a test client), over the fake SISA."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import torch

from service_fakes import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _poll(client, rid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        st = client.get(f"/v1/deletions/{rid}", headers=AUTH).json()
        if st["state"] in ("done", "failed") or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


@pytest.fixture
def client(live_server):
    url, _ = live_server
    with httpx.Client(base_url=url, timeout=10.0) as c:
        yield c


def test_server_binds_loopback_and_serves_openapi(live_server, client):
    url, _ = live_server
    assert url.startswith("http://127.0.0.1:")
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["worker_alive"] is True
    spec = client.get("/openapi.json").json()
    assert {"/v1/deletions", "/v1/deletions/{request_id}", "/v1/models/current", "/v1/predict",
            "/v1/ledger/verify", "/healthz"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/deletions"]["post"]["security"] == [{"HTTPBearer": []}]
    assert spec["paths"]["/v1/deletions/{request_id}"]["get"]["security"] == [{"HTTPBearer": []}]


def test_submit_poll_done(live_server, client):
    _, svc = live_server
    r = client.post("/v1/deletions", json={"sample_ids": [1, 2, 3]}, headers=AUTH)
    assert r.status_code == 202, r.text
    body = r.json()
    rid = body["request_id"]
    assert r.headers["location"] == f"/v1/deletions/{rid}"
    assert body["state"] == "received" and body["sample_ids"] == [1, 2, 3] and body["unknown_ids"] == []
    st = _poll(client, rid)
    assert st["state"] == "done", st
    assert [e["event"] for e in st["events"]] == ["received", "planned", "retraining", "done"]
    assert st["deleted_ids"] == [1, 2, 3]
    audit = st["audit"]
    model = client.get("/v1/models/current").json()
    assert model["version"] == audit["model_version"] == 2
    assert model["model_digest"] == audit["model_digest"] == svc.manager.model_digest
    assert model["n_deleted"] == 3
    assert 0.0 <= audit["membership"]["auc_deleted_vs_holdout"] <= 1.0
    v = client.get("/v1/ledger/verify").json()
    assert v["ok"] and v["rows"] == 4 and v["head_hash"] == st["events"][-1]["row_hash"]
    assert client.get("/v1/ledger/verify", params={"expected_head": v["head_hash"]}).json()["ok"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}])
def test_mutations_need_the_bearer_token(live_server, client, headers):
    _, svc = live_server
    r = client.post("/v1/deletions", json={"sample_ids": [1]}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in r.json()["detail"]
    # a malformed body without a token is still a 401: nothing is validated for unauthenticated callers
    assert client.post("/v1/deletions", content=b"{nope", headers=headers).status_code == 401
    assert svc.ledger.head()[0] == 0


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"ids": [1]}', 422, "sample_ids: Field required"),
    (b'{"sample_ids": [1], "extra": 1}', 422, "extra: Extra inputs are not permitted"),
    (b'{"sample_ids": []}', 422, "sample_ids: List should have at least 1 item"),
    (b'{"sample_ids": ["3"]}', 422, "sample_ids.0: Input should be a valid integer"),
    (b'{"sample_ids": [1.5]}', 422, "sample_ids.0: Input should be a valid integer"),
    (b'{"sample_ids": [-1]}', 422, "sample_ids.0: Input should be greater than or equal to 0"),
    (b'{"sample_ids": [2, 2]}', 422, "duplicates"),
    (b'{"sample_ids": [0,1,2,3,5,6,7,9,10,11,13,14,15,17,18,19,21,22,23,25,26]}', 422, "at most 20"),
    (b'{"sample_ids": 5}', 422, "sample_ids: Input should be a valid list"),
    (b'[1, 2]', 422, "Input should be a valid dictionary"),
])
def test_malformed_bodies_get_clear_4xx(live_server, client, body, status, fragment):
    _, svc = live_server
    r = client.post("/v1/deletions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert svc.ledger.head()[0] == 0


def test_unknown_sample_ids_and_unknown_requests(client):
    r = client.post("/v1/deletions", json={"sample_ids": [5, 4000, 4001]}, headers=AUTH)
    assert r.status_code == 202 and r.json()["unknown_ids"] == [4000, 4001]
    st = _poll(client, r.json()["request_id"])
    assert (st["state"], st["deleted_ids"], st["unknown_ids"]) == ("done", [5], [4000, 4001])
    # deleting again: reported as already deleted, not silently dropped
    r2 = client.post("/v1/deletions", json={"sample_ids": [5]}, headers=AUTH)
    st2 = _poll(client, r2.json()["request_id"])
    assert (st2["deleted_ids"], st2["already_deleted_ids"]) == ([], [5])
    missing = client.get("/v1/deletions/" + "0" * 32, headers=AUTH)
    assert missing.status_code == 404 and "no deletion request" in missing.json()["detail"]
    assert client.get("/v1/deletions/not-an-id", headers=AUTH).status_code == 422
    # the status names the deleted ids: it needs the token too
    rid = r.json()["request_id"]
    for bad in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        denied = client.get(f"/v1/deletions/{rid}", headers=bad)
        assert denied.status_code == 401 and "deleted_ids" not in denied.text


def test_idempotent_retry(live_server, client):
    _, svc = live_server
    first = client.post("/v1/deletions", json={"sample_ids": [6, 7], "idempotency_key": "abc"}, headers=AUTH)
    again = client.post("/v1/deletions", json={"sample_ids": [6, 7], "idempotency_key": "abc"}, headers=AUTH)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    via_header = client.post("/v1/deletions", json={"sample_ids": [7, 6]}, headers={**AUTH, "Idempotency-Key": "abc"})
    assert via_header.status_code == 202 and via_header.json()["request_id"] == first.json()["request_id"]
    conflict = client.post("/v1/deletions", json={"sample_ids": [6], "idempotency_key": "abc"}, headers=AUTH)
    assert conflict.status_code == 409 and conflict.json()["request_id"] == first.json()["request_id"]
    clash = client.post("/v1/deletions", json={"sample_ids": [6, 7], "idempotency_key": "abc"},
                        headers={**AUTH, "Idempotency-Key": "xyz"})
    assert clash.status_code == 422
    st = _poll(client, first.json()["request_id"])
    assert st["state"] == "done"
    assert svc.ledger.counts()["received"] == 1  # one request, however often it was sent
    # a retry after completion still returns the original receipt
    late = client.post("/v1/deletions", json={"sample_ids": [6, 7], "idempotency_key": "abc"}, headers=AUTH)
    assert late.json() == first.json()


def test_predict_uses_the_current_model(live_server, client):
    _, svc = live_server
    x, _, _ = svc.holdout.batch(np.arange(5))
    r = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    want = svc.manager.as_module()(x)
    assert out["predictions"] == want.argmax(1).tolist()
    torch.testing.assert_close(torch.tensor(out["probabilities"]), want.exp(), atol=1e-6, rtol=1e-5)
    assert out["version"] == 1
    rid = client.post("/v1/deletions", json={"sample_ids": [1, 2]}, headers=AUTH).json()["request_id"]
    assert _poll(client, rid)["state"] == "done"
    assert client.post("/v1/predict", json={"inputs": x.tolist()}).json()["version"] == 2
    bad = client.post("/v1/predict", json={"inputs": [[1.0, 2.0]]})
    assert bad.status_code == 422 and "shape [4]" in bad.json()["detail"]
    ragged = client.post("/v1/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0], [1.0]]})
    assert ragged.status_code == 422 and "rectangular" in ragged.json()["detail"]
    assert client.post("/v1/predict", json={"inputs": []}).status_code == 422
