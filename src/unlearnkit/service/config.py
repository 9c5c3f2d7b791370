"""Configuration of the deletion service (``unlearnkit serve CONFIG``).

A YAML file validated by :class:`ServiceConfig` (unknown keys are errors, as everywhere in unlearnkit). The bearer
token is never part of the config: the CLI reads it from the environment variable named by ``token_env``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from unlearnkit.config.limits import PathText
from unlearnkit.config.schema import DataConfig, EngineConfig, Frozen, ModelSpec
from unlearnkit.errors import ConfigError

#: shortest accepted bearer token (characters)
MIN_TOKEN_LENGTH = 16
#: hosts always accepted in the HTTP ``Host`` header (besides the bind address and ``allowed_hosts``)
LOCAL_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
#: default cap of an HTTP request body (bytes)
DEFAULT_MAX_BODY = 4 << 20


def check_token(token: str | None, env: str = "UNLEARNKIT_TOKEN") -> str:
    """Return ``token`` if it can guard the API: at least :data:`MIN_TOKEN_LENGTH` characters, no whitespace.

    Raises:
        ConfigError: missing, too short or with whitespace (says how to make a good one).
    """
    how = (f"export {env}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if not token or not token.strip():
        raise ConfigError(f"no bearer token: set the environment variable {env} to a secret, e.g. {how}")
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token) or not token.isprintable():
        raise ConfigError(f"the bearer token in {env} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                          f"printable characters without spaces (a short token can be guessed), e.g. {how}")
    return token


def _default_engine() -> EngineConfig:
    return EngineConfig(device="cpu", progress=False)


class ServiceConfig(Frozen):
    """Settings of the deletion service: data, SISA ensemble, storage, HTTP binding, batching.

    Units: ``batch_window_s`` in seconds; ``port`` a TCP port (0 = let the OS choose).
    """

    name: str = Field("service", description="a label for logs and the model endpoint")
    data: DataConfig = Field(default_factory=DataConfig, description="the training data (sample ids are its ids); "
                             "its test split is the non-member pool of the audit's membership check")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="mlp", params={"hidden": [64]}),
                             description="architecture of each SISA constituent model")
    sisa: dict[str, Any] = Field(default_factory=dict, description="SISAConfig fields (shards, slices, "
                                 "aggregation, train, seed); validated against methods/exact/sisa.py's SISAConfig")
    engine: EngineConfig = Field(default_factory=_default_engine)
    store: PathText = Field("runs/service/store", description="folder of the SISA checkpoints and committed state "
                            "(created 0700: its state files name the deleted ids)")
    ledger: PathText | None = Field(None, description="ledger SQLite file (created 0600); None = "
                                    "<store>/ledger.sqlite3")
    ledger_synchronous: Literal["full", "normal"] = Field(
        "full", description="full: every append is fsynced (survives power loss); normal: survives a killed "
                            "process only")
    host: str = Field("127.0.0.1", description="address to bind; loopback by default (set 0.0.0.0 deliberately)")
    port: int = Field(8765, ge=0, le=65535)
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64, description="host names accepted in the "
                                     "HTTP Host header besides the bind address, localhost, 127.0.0.1 and ::1 (needed "
                                     "when clients reach the service by a name, e.g. behind a proxy); '*' = any")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY, ge=1024, le=1 << 30, description="largest HTTP request body "
                                "(bytes); larger ones get a 413 before they are read")
    token_env: str = Field("UNLEARNKIT_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                           description="environment variable holding the bearer token (read by the CLI only)")
    executor: str = Field("sequential", description="executor of shard retraining jobs: sequential, process, ray")
    executor_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the executor")
    executor_nice: int = Field(10, ge=0, le=19, description="process executor: niceness added to the worker "
                               "processes, so retraining yields the CPU to the API (0 = same priority)")
    batch_window_s: float = Field(0.2, ge=0, le=3600, description="after the first pending request arrives, wait "
                                  "this long for more before planning a window (requests arriving during a retrain "
                                  "wait for the next window anyway)")
    max_ids_per_request: int = Field(10_000, ge=1, le=100_000,
                                     description="largest number of sample ids in one request")
    audit_max_retained: int = Field(500, ge=0, description="retained (member) samples scored as the audit's "
                                    "reference pool; 0 = skip the reference")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if v != "localhost":
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"host must be an IP address or 'localhost', got {v[:60]!r}") from None
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        import re

        bad = [h for h in v if not re.fullmatch(r"\*|[A-Za-z0-9._:\-\[\]]{1,253}", h)]
        if bad:
            raise ValueError(f"allowed_hosts must be host names or addresses (or '*'), got {bad[0][:60]!r}")
        return v

    @model_validator(mode="after")
    def _check_sisa(self) -> ServiceConfig:
        from unlearnkit.service.executors import EXECUTORS

        cfg = sisa_config_from(self.sisa)
        object.__setattr__(self, "sisa", cfg.model_dump(mode="json"))
        try:
            EXECUTORS.validate_config(self.executor, self.executor_params)
        except ConfigError as err:
            raise ValueError(f"executor: {err}") from None
        return self

    # -- derived ------------------------------------------------------------------------------------------------
    @property
    def ledger_path(self) -> Path:
        """The ledger file: ``ledger`` or ``<store>/ledger.sqlite3``."""
        from unlearnkit.service.ledger import default_ledger_path

        return Path(self.ledger) if self.ledger else default_ledger_path(self.store)

    @property
    def is_loopback(self) -> bool:
        """True when ``host`` only accepts connections from this machine."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback


def sisa_config_from(params: dict[str, Any]) -> Any:
    """Validate ``params`` as a SISAConfig (methods/exact/sisa.py).

    Raises:
        ValueError: invalid or unknown keys (pydantic turns it into a config error with the location).
    """
    from unlearnkit.methods.exact.sisa import SISAConfig

    try:
        return SISAConfig.model_validate(dict(params))
    except ValidationError as err:
        msgs = "; ".join(f"sisa.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{msgs}. Allowed keys: {', '.join(SISAConfig.model_fields)}") from None


def load_service_config(path: str | Path, overrides: Iterable[str] = ()) -> ServiceConfig:
    """Load a service YAML (``extends:`` and ``--set a.b=v`` work as for experiments); a bundled name also works.

    Raises:
        ConfigError: missing file, bad YAML, unknown key (names the allowed keys), bad value.
    """
    from unlearnkit.config.loader import apply_overrides, load_raw, parse_overrides, resolve_config_path, \
        validate_raw

    p = resolve_config_path(path)
    base = load_raw(p)
    parsed = parse_overrides(overrides)
    raw = apply_overrides(base, parsed)
    # --set executor=X switches the executor: the file's executor_params belong to the old one (e.g. the process
    # pool's max_workers), so they go unless executor_params is overridden too
    keys = {tuple(parts) for parts, _ in parsed}
    if ("executor",) in keys and raw.get("executor") != base.get("executor") and \
            not any(k[0] == "executor_params" for k in keys):
        raw.pop("executor_params", None)
    return validate_raw(ServiceConfig, raw, str(p))


__all__ = ["DEFAULT_MAX_BODY", "LOCAL_HOSTS", "MIN_TOKEN_LENGTH", "ServiceConfig", "check_token", "load_service_config",
           "sisa_config_from"]
