"""The alert service's configuration: one TOML file, validated by msgspec, loaded once in
the entrypoint. Secrets never sit in the file: it names environment variables.

```toml
[mqtt]
host = "127.0.0.1"
port = 1883
username = "alerts"                    # optional
password_env = "DERRICK_ALERTS_MQTT_PASSWORD"

[registry]
dsn_env = "DERRICK_PG_DSN"

[questdb]                              # catch-up after a restart
dsn_env = "DERRICK_QUESTDB_PG"
table_prefix = ""
kpi_group = "derrick-cloud"

[evaluator]
name = "alerts-1"

[notify]
max_attempts = 6

[smtp]                                 # optional: e-mail targets need it
host = "127.0.0.1"
port = 25
sender = "alerts@derrick.example"
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from core.config import convert, read_bytes, toml_to_builtins

Port = Annotated[int, Meta(ge=1, le=65535)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Z_][A-Z0-9_]*$")]
Millis = Annotated[int, Meta(ge=10, le=3_600_000)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class MqttConfig(_Strict, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password_env: EnvName | None = None
    client_id: str = "derrick-alerts"


class RegistryConfig(_Strict, kw_only=True, frozen=True):
    dsn_env: EnvName = "DERRICK_PG_DSN"


class QuestDBConfig(_Strict, kw_only=True, frozen=True):
    dsn_env: EnvName = "DERRICK_QUESTDB_PG"
    table_prefix: str = ""
    kpi_group: str = "derrick-cloud"


class EvaluatorSettings(_Strict, kw_only=True, frozen=True):
    #: Names this evaluator's checkpoint row.
    name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")] = "alerts-1"
    #: How often rules and open alerts are re-read from PostgreSQL.
    reload_interval_ms: Millis = 2000
    #: How often no-data rules are checked and the checkpoint written.
    tick_interval_ms: Millis = 1000
    #: After a restart, replay at most this much stored data from QuestDB.
    catchup_max_s: Annotated[int, Meta(ge=0, le=7 * 86400)] = 3600
    #: Ask a node whose birth we missed for a rebirth (at most once per interval).
    request_rebirth: bool = True
    rebirth_interval_s: Annotated[int, Meta(ge=1)] = 60


class NotifySettings(_Strict, kw_only=True, frozen=True):
    enabled: bool = True
    poll_interval_ms: Millis = 500
    #: A delivery failing this many times is dead-lettered.
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 6
    backoff_base_ms: Millis = 2000
    backoff_max_ms: Millis = 600_000
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 10.0


class SmtpConfig(_Strict, kw_only=True, frozen=True):
    host: str
    port: Port = 25
    sender: str
    username: str | None = None
    password_env: EnvName | None = None
    starttls: bool = False


class AlertsConfig(_Strict, kw_only=True, frozen=True):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)
    questdb: QuestDBConfig = msgspec.field(default_factory=QuestDBConfig)
    evaluator: EvaluatorSettings = msgspec.field(default_factory=EvaluatorSettings)
    notify: NotifySettings = msgspec.field(default_factory=NotifySettings)
    smtp: SmtpConfig | None = None


def parse_config(text: bytes | str, *, source: str = "<config>") -> AlertsConfig:
    return convert(toml_to_builtins(text, source=source), AlertsConfig, source=source)


def load_config(path: Path) -> AlertsConfig:
    return parse_config(read_bytes(path), source=str(path))
