"""HTTP API of the deletion service (FastAPI; extra ``[service]``).

Endpoints (OpenAPI schema at ``/openapi.json``; no ``/docs`` page: FastAPI's Swagger UI loads its scripts from a CDN,
which an offline or locked-down service must not do — open the schema in any OpenAPI viewer)::

    POST /v1/deletions            {"sample_ids": [int, ...], "idempotency_key": str?}  → 202 receipt   (token)
    GET  /v1/deletions/{id}       state, classification of the ids, audit record once done           (token)
    GET  /v1/models/current       version, digest, counts of the serving model
    POST /v1/predict              {"inputs": [[...], ...]} → predictions, probabilities, model version
    GET  /v1/ledger/verify        hash-chain check (``?expected_head=`` checks that the chain still extends it)
    GET  /healthz                 liveness of the server and its worker

Submitting a deletion and reading its status (which names the deleted ids: who asked to be forgotten is itself
personal data) need ``Authorization: Bearer <token>`` (401 otherwise, compared in constant time). The model's
version, predictions, the ledger's hash-chain check (for outside auditors: it reveals counts and digests, no ids)
and liveness are open. ``Idempotency-Key`` may be given as a header or in the body; a retry with the same key and ids returns the
same 202 body (header ``Idempotent-Replayed: true``), the same key with other ids is a 409. Bodies are validated:
malformed JSON is a 400, a well-formed body with wrong fields or values a 422, both with a message naming the field.

Before any route runs, an outer guard (:class:`RequestGuard`) refuses a request whose ``Host`` header is not an
allowed host (400: DNS rebinding; allowed are the bind address, ``localhost``, ``127.0.0.1``, ``::1`` and the
config's ``allowed_hosts``), a request to ``/v1/deletions…`` without the bearer token (401, *before* its body is
read), and a body larger than ``max_body_bytes`` (413, read no further). The token must have at least
:data:`~unlearnkit.service.config.MIN_TOKEN_LENGTH` characters.
"""

# no ``from __future__ import annotations``: FastAPI must resolve the endpoint annotations, which name classes
# defined inside create_app
import hmac
import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

from unlearnkit.errors import ConfigError, DataError, LedgerError, UnlearnkitError
from unlearnkit.service.config import DEFAULT_MAX_BODY, LOCAL_HOSTS, check_token
from unlearnkit.service.ledger import MAX_SAMPLE_ID

log = logging.getLogger("unlearnkit.service")

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PREDICT = 1024
MAX_IDS_BODY = 100_000


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as err:
        raise ConfigError("the deletion service needs FastAPI and uvicorn: pip install 'unlearnkit[service]'"
                          ) from err
    return fastapi


PROTECTED_PREFIX = "/v1/deletions"


def _json_response(status: int, detail: str, headers: dict[str, str] | None = None) -> tuple[dict, dict]:
    import json

    body = json.dumps({"detail": detail}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return ({"type": "http.response.start", "status": status, "headers": hdrs},
            {"type": "http.response.body", "body": body})


def host_of(header: str) -> str:
    """The host part of a ``Host`` header (port and IPv6 brackets removed, lower case)."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class RequestGuard:
    """ASGI middleware run before routing: Host allow-list, bearer token of ``/v1/deletions…`` checked before the
    body is read, and a cap on the body size (Content-Length, or the bytes actually received).

    Args:
        app: the ASGI app.  token: the bearer token (bytes, compared in constant time).
        allowed_hosts: host names / addresses accepted in the ``Host`` header (``"*"`` accepts any).
        max_body_bytes: largest request body.
    """

    def __init__(self, app: Any, token: bytes, allowed_hosts: set[str], max_body_bytes: int) -> None:
        self.app, self.token = app, token
        self.allowed = {h.lower() for h in allowed_hosts}
        self.max_body = int(max_body_bytes)

    async def _refuse(self, send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        start, body = _json_response(status, detail, headers)
        await send(start)
        await send(body)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), v)
        host = host_of(headers.get(b"host", b"").decode("latin-1"))
        if "*" not in self.allowed and host not in self.allowed:
            await self._refuse(send, 400, f"invalid Host header {host[:80]!r}: this service answers to "
                               f"{', '.join(sorted(self.allowed))} (add a name to allowed_hosts in the service "
                               "config to serve it)")
            return
        if scope.get("path", "").startswith(PROTECTED_PREFIX):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, cred = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(cred.strip().encode("latin-1"), self.token):
                await self._refuse(send, 401, "missing or invalid bearer token: send 'Authorization: Bearer "
                                   "<token>'", {"WWW-Authenticate": "Bearer"})
                return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_big = f"request body larger than {self.max_body} bytes; send fewer sample ids or inputs per request"
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._refuse(send, 400, "invalid Content-Length header")
                return
            if declared > self.max_body:
                await self._refuse(send, 413, too_big)
                return
        body = bytearray()
        while True:  # read the (bounded) body here, then hand it to the app in one message
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            body += msg.get("body", b"")
            if len(body) > self.max_body:
                await self._refuse(send, 413, too_big)
                return
            if not msg.get("more_body", False):
                break
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(service: Any, token: str, *, manage_service: bool = True, bind_host: str = "127.0.0.1",
               allowed_hosts: Any = (), max_body_bytes: int = DEFAULT_MAX_BODY) -> Any:
    """Build the FastAPI app serving ``service`` (a :class:`~unlearnkit.service.deletion.DeletionService`).

    Args:
        service: the deletion service.
        token: the bearer token every mutation must present (at least 16 characters).
        manage_service: start the service's worker when the app starts and close the service when it stops.
        bind_host: the address the server binds (accepted in the ``Host`` header, with localhost, 127.0.0.1, ::1).
        allowed_hosts: further host names accepted in the ``Host`` header (``"*"``: any).
        max_body_bytes: largest request body (413 above).

    Raises:
        ConfigError: FastAPI is not installed, or the token is empty or too short.
    """
    _fastapi()
    from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field, StrictInt

    check_token(token)
    token_bytes = token.encode()
    hosts = {*LOCAL_HOSTS, host_of(bind_host), *(host_of(h) for h in allowed_hosts)}

    class DeletionBody(BaseModel):
        """A deletion request: the stable sample ids of the training data to forget."""

        model_config = ConfigDict(extra="forbid")
        sample_ids: list[Annotated[StrictInt, Field(ge=0, le=MAX_SAMPLE_ID)]] = Field(
            ..., min_length=1, max_length=MAX_IDS_BODY, description="sample ids (integers in [0, 2**63 − 1], "
            "distinct)",
            examples=[[12, 40, 977]])
        idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                            description="retries with the same key return the same request")

    class PredictBody(BaseModel):
        """Inputs to classify: a list of samples, each nested lists of numbers of the model's input shape (or
        flat)."""

        model_config = ConfigDict(extra="forbid")
        inputs: list[Any] = Field(..., min_length=1, max_length=MAX_PREDICT)

    class Receipt(BaseModel):
        request_id: str
        state: str
        received_at: str
        sample_ids: list[int]
        unknown_ids: list[int]
        idempotency_key: str | None

    @asynccontextmanager
    async def lifespan(app: Any):
        if manage_service:
            service.start()
        try:
            yield
        finally:
            if manage_service:
                service.close()

    app = FastAPI(title="unlearnkit deletion service", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="Exact unlearning (SISA) on request, with a tamper-evident ledger.")
    app.add_middleware(RequestGuard, token=token_bytes, allowed_hosts=hosts, max_body_bytes=max_body_bytes)
    bearer = HTTPBearer(auto_error=False, description="the token from the environment variable UNLEARNKIT_TOKEN "
                                                      "(or the config's token_env)")

    async def require_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        # async: a sync dependency would cost a thread-pool hand-off per request
        if creds is None or creds.scheme.lower() != "bearer" or not hmac.compare_digest(
                creds.credentials.encode(), token_bytes):
            raise HTTPException(401, "missing or invalid bearer token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "request body is not valid JSON", "errors": _plain(errors)}, 400)
        msgs = []
        for e in errors:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            msgs.append(f"{loc}: {e.get('msg')}")
        return JSONResponse({"detail": "invalid request: " + "; ".join(msgs), "errors": _plain(errors)}, 422)

    @app.exception_handler(UnlearnkitError)
    async def _typed(request: Request, exc: UnlearnkitError) -> JSONResponse:
        from unlearnkit.service.ledger import IdempotencyConflict

        if isinstance(exc, IdempotencyConflict):
            return JSONResponse({"detail": str(exc), "request_id": exc.request_id}, 409)
        if isinstance(exc, DataError):
            return JSONResponse({"detail": str(exc)}, 422)
        if isinstance(exc, LedgerError):
            return JSONResponse({"detail": str(exc)}, 503)
        return JSONResponse({"detail": str(exc)}, 400)

    @app.post("/v1/deletions", status_code=202, response_model=Receipt, dependencies=[Depends(require_token)],
              summary="Submit a deletion request", responses={401: {"description": "missing or invalid token"},
                                                              409: {"description": "idempotency key reused"}})
    async def submit_deletion(body: DeletionBody,
                              idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Any:
        # on the event loop: the ledger write is awaited from the group-commit writer thread, so concurrent
        # requests share one transaction and one fsync
        key = body.idempotency_key
        if idempotency_key is not None and key is not None and idempotency_key != key:
            raise DataError("the Idempotency-Key header and the body's idempotency_key differ; send one of them")
        receipt = await service.asubmit(body.sample_ids, key if key is not None else idempotency_key)
        headers = {"Location": f"/v1/deletions/{receipt.request_id}"}
        if not receipt.created:
            headers["Idempotent-Replayed"] = "true"
        # a Response object skips re-validating the (already typed) receipt against response_model: the accept
        # path is the hot one; response_model still documents the body in the OpenAPI schema
        return JSONResponse(receipt.as_dict(), status_code=202, headers=headers)

    @app.get("/v1/deletions/{request_id}", summary="State and audit record of a deletion request",
             dependencies=[Depends(require_token)],
             responses={401: {"description": "missing or invalid token"}, 404: {"description": "no such request"}})
    def get_deletion(request_id: Annotated[str, Path(pattern=REQUEST_ID.pattern,
                                                     description="32 hex characters")]) -> dict[str, Any]:
        status = service.status(request_id)
        if status is None:
            raise HTTPException(404, f"no deletion request {request_id} in the ledger")
        return status

    @app.get("/v1/models/current", summary="The serving model's version and digest")
    def current_model() -> dict[str, Any]:
        return service.model_info()

    @app.post("/v1/predict", summary="Classify inputs with the current model")
    def predict(body: PredictBody) -> dict[str, Any]:
        import numpy as np
        import torch

        try:
            x = np.asarray(body.inputs, dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise DataError(f"inputs must be a rectangular array of numbers ({err})") from None
        return service.predict(torch.from_numpy(x))

    @app.get("/v1/ledger/verify", summary="Verify the ledger's hash chain")
    def verify(expected_head: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None) -> dict[str, Any]:
        return service.ledger.verify(expected_head=expected_head).as_dict()

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, Any]:
        s = service.serving()
        return {"status": "ok", "worker_alive": service.worker_alive, "pending": service.pending_count,
                "model_version": s.version, "last_error": service.last_error}

    app.state.service = service
    return app


def _plain(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")})
    return out


class BackgroundServer:
    """A real uvicorn server on a loopback port, in a background thread (tests, benchmarks, notebooks).

    Args:
        app: the ASGI app.  host: address to bind (127.0.0.1).  port: 0 = a free port chosen by the OS.

    Example::

        with BackgroundServer(create_app(service, token)) as srv:
            httpx.get(f"{srv.url}/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                     lifespan="on")
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start (see its log above)")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        self.port = int(sock.getsockname()[1])
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(service: Any, token: str, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Run the API with uvicorn in the foreground until interrupted (the worker starts and stops with it)."""
    import uvicorn

    app = create_app(service, token, bind_host=host)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["BackgroundServer", "RequestGuard", "create_app", "host_of", "serve"]
