"""The ingest worker's configuration: one TOML file, validated by msgspec.

Connection secrets never live in this file: the QuestDB ILP configuration string and the MQTT
password are read from the environment variables or files it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from core import conventions
from core.config import (
    convert,
    read_bytes,
    read_secret_file,
    toml_to_builtins,
)

Port = Annotated[int, Meta(ge=1, le=65535)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class MqttConfig(_Strict, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    reconnect_min_s: Annotated[float, Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 30.0


class QuestDBConfig(_Strict, kw_only=True, frozen=True):
    #: Name of the environment variable that holds the ILP/HTTP configuration string
    #: (``http::addr=host:9000;username=…;password=…;``).
    ilp_conf_env: str = "DERRICK_QUESTDB_ILP"
    #: Name of the environment variable that holds the PGWire connection string (DDL).
    pg_dsn_env: str = "DERRICK_QUESTDB_PG"
    table_prefix: str = ""
    #: Create the tables at start (``CREATE TABLE IF NOT EXISTS``).
    create_tables: bool = True


class IngestSettings(_Strict, kw_only=True, frozen=True):
    primary_host_id: str = conventions.DEFAULT_PRIMARY_HOST_ID
    #: Worker name: part of the MQTT client id.
    worker: str = "w0"
    #: Sparkplug groups (sites) this worker serves; ``["+"]`` = all (static partition by site).
    groups: Annotated[list[str], Meta(min_length=1)] = msgspec.field(default_factory=lambda: ["+"])
    #: Share the groups with other workers through ``$share/<shared_group>/...`` (EMQX with
    #: ``shared_subscription_strategy = hash_clientid`` keeps each node on one worker).
    #: Unset: this worker alone receives its groups (static partition by site).
    shared_group: str | None = None
    #: Rows collected this long go to QuestDB as one transaction per table. QuestDB's cost
    #: is mostly per transaction (measured on 2 cores: the same CPU for 200- and 2,000-row
    #: commits), so fewer, larger commits leave more of the machine for the data; 250 ms
    #: keeps sample-to-queryable well under the 1 s bar.
    flush_interval_ms: Annotated[int, Meta(ge=1, le=60_000)] = 250
    flush_max_rows: Annotated[int, Meta(ge=1)] = 50_000
    #: While QuestDB cannot take rows, at most this many wait in memory; data beyond it is
    #: not acknowledged (the edges keep it and send it again).
    max_pending_rows: Annotated[int, Meta(ge=1000)] = 500_000
    max_payload_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    #: At most one acknowledgement (NCMD) per node in this period; acks are cumulative.
    #: Keep it well under the edges' ``ack_timeout_ms`` (15 s by default). An appliance
    #: publishes about once a second, so at 1 s the worker would publish one NCMD per message
    #: it receives (an MQTT publish costs about what storing the message does); at 5 s, one
    #: per five, and an edge keeps at most ~5 s more in its queue.
    ack_interval_ms: Annotated[int, Meta(ge=0, le=60_000)] = 5000
    #: How long a seq gap may stay open before the node is asked to rebirth.
    reorder_timeout_ms: Annotated[int, Meta(ge=0)] = 2000
    #: At most one rebirth request per node in this period.
    rebirth_cooldown_s: Annotated[float, Meta(ge=0)] = 30.0
    #: At most this many rebirth requests per second across all nodes.
    rebirth_rate_per_s: Annotated[float, Meta(gt=0)] = 50.0
    #: Per-node quota on live data, metrics per second (a token bucket holding
    #: ``node_quota_burst``); 0 = none. A node's legitimate live rate is 100-200 values/min,
    #: 50/s in alarm: the default is ten times that, so only a runaway node (a bug, a
    #: looping legacy source) meets it. Over the quota a live batch is not stored and not
    #: acknowledged: the node keeps it and sends it again as historical data, which it paces
    #: by its link share and which the quota does not count (delayed, never lost). A live
    #: message without a batch number (a third-party node) becomes a dead letter ``quota``.
    node_quota_metrics_per_s: Annotated[float, Meta(ge=0)] = 500.0
    node_quota_burst: Annotated[int, Meta(ge=1)] = 5000


class KpiSettings(_Strict, kw_only=True, frozen=True):
    """The KPI edge node (``ingest.kpi_node``): KPIs published back as Sparkplug."""

    enabled: bool = True
    #: Sparkplug group of the KPI edge nodes; each worker is node ``kpi-<worker>`` in it.
    group_id: str = "derrick-cloud"
    #: Drilling efficiency needs ROP, WOB and RPM at most this far apart in time.
    freshness_ms: Annotated[int, Meta(ge=0)] = 30_000
    #: KPI messages waiting to be published; beyond this they are dropped and counted.
    queue_size: Annotated[int, Meta(ge=1)] = 10_000


class MetricsSettings(_Strict, kw_only=True, frozen=True):
    """Prometheus metrics (``ingest.metrics``) on ``http://<address>:<port>/metrics``."""

    #: Unset: no metrics server.
    port: Port | None = None
    address: str = "127.0.0.1"


class AuditSettings(_Strict, kw_only=True, frozen=True):
    """The audit archive (``ingest.audit``): every received message, raw, hash-chained.

    Off unless ``directory`` is set (default: unset). Production sets it to a durable volume
    of its own; the chain of this worker is ``<directory>/<primary_host_id>-<worker>/``.
    """

    directory: Path | None = None
    #: A segment is sealed and the next begun beyond this size ...
    segment_max_bytes: Annotated[int, Meta(ge=4096)] = 64 * 1024 * 1024
    #: ... or this age (seconds).
    segment_max_age_s: Annotated[float, Meta(gt=0)] = 3600.0


class IngestConfig(_Strict, kw_only=True, frozen=True):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    questdb: QuestDBConfig = msgspec.field(default_factory=QuestDBConfig)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    kpi: KpiSettings = msgspec.field(default_factory=KpiSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)


def parse_config(text: bytes | str, *, source: str = "<config>") -> IngestConfig:
    return convert(toml_to_builtins(text, source=source), IngestConfig, source=source)


def load_config(path: Path) -> IngestConfig:
    return parse_config(read_bytes(path), source=str(path))


def read_password(cfg: MqttConfig) -> str | None:
    return read_secret_file(cfg.password_file, "MQTT password")
