"""The API service's configuration: a TOML file decoded into msgspec Structs, once, in the
entrypoint. Secrets never sit in the file: it names the environment variables holding the
DSNs and the broker password (``*_env`` fields), resolved by :func:`resolve`.

```toml
[server]
host = "127.0.0.1"
port = 8080

[registry]
dsn_env = "DERRICK_PG_DSN"

[questdb]
dsn_env = "DERRICK_QUESTDB_PG"
table_prefix = ""
kpi_group = "derrick-cloud"

[vendor]          # optional: vendor datasets
pseudonym_key_file = "/etc/derrick/vendor-pseudonym.key"

[metrics]         # optional: Prometheus metrics on their own listener (api.ops)
port = 9110
host = "127.0.0.1"

[live]            # optional: the SSE stream's Sparkplug consumer
host = "127.0.0.1"
port = 1883
username = "api"
password_env = "DERRICK_API_MQTT_PASSWORD"
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from api.errors import ConfigError

Port = Annotated[int, Meta(ge=1, le=65535)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Z_][A-Z0-9_]*$")]


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080


class RegistryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dsn_env: EnvName = "DERRICK_PG_DSN"
    pool_max: Annotated[int, Meta(ge=1, le=100)] = 8
    #: Seconds a key's principal and a tenant's visibility answers are reused (0: never): a
    #: revoked key or a withdrawn share takes effect within this time.
    cache_s: Annotated[float, Meta(ge=0, le=60)] = 5.0


class QuestDBReadConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dsn_env: EnvName = "DERRICK_QUESTDB_PG"
    table_prefix: str = ""
    kpi_group: str = "derrick-cloud"
    pool_max: Annotated[int, Meta(ge=1, le=100)] = 8


class LiveConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password_env: EnvName | None = None
    client_id: str = "derrick-api-live"
    #: live streams one API key (one tenant, over all its keys) may hold open at once
    max_streams_per_key: Annotated[int, Meta(ge=1)] = 4
    max_streams_per_tenant: Annotated[int, Meta(ge=1)] = 20


class VendorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: File holding the secret key of vendor-dataset pseudonyms (>= 32 bytes; never logged).
    pseudonym_key_file: str


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``/metrics`` on its own listener: not on the customer-facing port (``api.ops``)."""

    port: Port
    host: str = "127.0.0.1"


class ApiConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    registry: RegistryConfig = RegistryConfig()
    questdb: QuestDBReadConfig = QuestDBReadConfig()
    live: LiveConfig | None = None
    vendor: VendorConfig | None = None
    metrics: MetricsConfig | None = None


def load(path: Path) -> ApiConfig:
    try:
        return msgspec.toml.decode(path.read_bytes(), type=ApiConfig)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def secret_file(path: str, *, min_bytes: int = 32) -> bytes:
    """A key from its file (surrounding whitespace stripped); the error names the file only."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    if len(key) < min_bytes:
        raise ConfigError(f"key file {path} holds fewer than {min_bytes} bytes")
    return key


def secret_from_env(name: str) -> str:
    """The value of environment variable ``name``; ConfigError (naming only the variable)."""
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set")
    return value
