"""The edge agent's configuration: one TOML file, validated by msgspec.

Loaded once in the entrypoint and passed down. An error names the key path and what was
expected (``Expected `int` >= 1, got `0` - at `$.sampling.normal_per_min```).
Secrets (the MQTT password) are read from a file named here, never kept in this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from core import conventions, ids, tags
from core.config import (
    ConfigError,
    convert,
    read_bytes,
    read_secret_file,
    toml_to_builtins,
)

PositiveInt = Annotated[int, Meta(ge=1)]
Share = Annotated[float, Meta(gt=0.0, le=1.0)]
Port = Annotated[int, Meta(ge=1, le=65535)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class NodeConfig(_Strict, kw_only=True, frozen=True):
    site: str
    appliance: str


class MqttServer(_Strict, kw_only=True, frozen=True):
    host: str
    port: Port = 1883


class MqttConfig(_Strict, kw_only=True, frozen=True):
    servers: Annotated[list[MqttServer], Meta(min_length=1)]
    primary_host_id: str = conventions.DEFAULT_PRIMARY_HOST_ID
    #: Wait for the Primary Host's STATE before publishing (Sparkplug 3.0 §5).
    wait_for_primary_host: bool = True
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    username: str | None = None
    password_file: Path | None = None
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    reconnect_min_s: Annotated[float, Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 10.0


class QueueConfig(_Strict, kw_only=True, frozen=True):
    path: Path
    max_bytes: Annotated[int, Meta(ge=1_000_000)] = 150_000_000
    #: fsync every commit. Turning it off loses the last commits on a power cut.
    fsync: bool = True


class PublishConfig(_Strict, kw_only=True, frozen=True):
    #: How often samples are committed (one fsync) and published.
    interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 1000
    #: A batch first published later than this after its commit is marked historical.
    live_window_ms: PositiveInt = 5000
    #: An unacknowledged batch is re-sent after this (doubling per attempt, up to 16×).
    ack_timeout_ms: PositiveInt = 15_000
    #: The site link's capacity share one appliance may use, bytes/s (10 Mbit/s / 100).
    link_bytes_per_s: PositiveInt = 12_500
    #: Share of that capacity replay (historical data) may take; live data always goes first.
    replay_share: Share = 0.5
    #: Most samples in one batch, and so in one data message (a batch is never split).
    max_metrics_per_message: Annotated[int, Meta(ge=1, le=10_000)] = 500
    #: How often node metrics (queue depth, ...) are published when changed, and the status
    #: file for ``derrick-edge health`` is written.
    status_interval_ms: Annotated[int, Meta(ge=100, le=600_000)] = 5000
    #: Send historical (replayed) data DEFLATE-compressed, as Sparkplug's compressed
    #: payloads (uuid ``SPBV1.0_COMPRESSED``), when that makes a message smaller.
    compress_historical: bool = True
    #: Compress live data the same way (~40 % fewer bytes at the alarm rate: 12 B a value
    #: instead of 20). A host that reads the replays already reads compressed payloads
    #: (Derrick's ingest, Ignition/Cirrus Link); turn it off for live-only subscribers
    #: whose decoder cannot inflate (Tahu JS, as with ``datatype_in_data``).
    compress_live: bool = True
    #: Put the datatype on every metric of data messages (spec: SHOULD NOT; some decoders need it).
    datatype_in_data: bool = False


class SamplingConfig(_Strict, kw_only=True, frozen=True):
    #: Values per minute for the whole appliance in normal operation, spread over its sensors.
    normal_per_min: Annotated[int, Meta(ge=1, le=60_000)] = 150
    #: Values per minute in alarm (500 per 10 s = 3000 per minute).
    alarm_per_min: Annotated[int, Meta(ge=1, le=60_000)] = 3000
    #: Alarm mode is left this long after the last trigger cleared.
    alarm_hold_s: Annotated[float, Meta(ge=0)] = 120.0


class AlarmRule(_Strict, kw_only=True, frozen=True):
    tag: str
    above: float | None = None
    below: float | None = None
    #: Absolute change per second that triggers alarm.
    rate_per_s: Annotated[float, Meta(gt=0)] | None = None


class SensorConfig(_Strict, kw_only=True, frozen=True):
    tag: str
    unit: str
    hot: bool | None = None
    #: Local DAQ channel (0–31) of a simulator/DAQ device.
    channel: Annotated[int, Meta(ge=0, le=31)] | None = None
    #: OPC UA device: the node id read for this tag (``ns=2;s=Rig.WOB``).
    node_id: str | None = None
    #: CSV replay device: the column holding this tag (default: the tag itself).
    column: str | None = None
    #: Report by exception: a value within this of the last published one is skipped
    #: (at most ``max_silence_s`` of silence).
    deadband: Annotated[float, Meta(ge=0)] = 0.0


class HealthConfig(_Strict, kw_only=True, frozen=True):
    #: The agent is unhealthy when its status file is older than this.
    max_status_age_s: Annotated[float, Meta(gt=0)] = 30.0
    #: ... or when it has not been born (connected, Primary Host online) for this long.
    max_offline_s: Annotated[float, Meta(gt=0)] = 120.0
    #: ... or when its oldest unacknowledged batch is older than this while connected.
    max_unacked_age_s: Annotated[float, Meta(gt=0)] = 300.0


class _DeviceBase(_Strict, kw_only=True, frozen=True, tag_field="source"):
    id: str
    sensors: Annotated[list[SensorConfig], Meta(min_length=1)]


class SimulatorDevice(_DeviceBase, kw_only=True, frozen=True, tag="simulator"):
    """Local channels read from the drilling-rig simulator (the default ``source``)."""

    seed: int = 0
    #: While this file exists the simulated DAQ is unreachable.
    fault_file: Path | None = None


class OpcUaDevice(_DeviceBase, kw_only=True, frozen=True, tag="opcua"):
    """One OPC UA server: every sensor names its ``node_id``; values come by subscription
    (monitored items, data change), with the server's source timestamps and status."""

    endpoint: str
    #: ``None``, or ``SignAndEncrypt`` with the ``policy`` below and certificates.
    security: Literal["None", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    #: Our application instance certificate and key (PEM or DER) and the server's
    #: certificate (trusted explicitly), for ``SignAndEncrypt``.
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    #: The application URI in our certificate (its subjectAltName URI).
    application_uri: str = "urn:derrick:edge"
    request_timeout_s: Annotated[float, Meta(gt=0)] = 4.0
    #: Reconnect backoff after the server went away.
    reconnect_min_s: Annotated[float, Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 10.0
    #: No notification for this long and a failed status read: the server is gone.
    watchdog_s: Annotated[float, Meta(gt=0)] = 5.0


class CsvDevice(_DeviceBase, kw_only=True, frozen=True, tag="csv"):
    """Replays a drilling CSV (a header of sensor columns, one row per time step)."""

    path: Path
    #: Column with each row's time (ISO 8601, or epoch seconds/milliseconds); it must be in
    #: the header. ``""``: no time column, rows are ``row_interval_s`` apart, starting when
    #: the replay starts.
    time_column: str | None = "time"
    row_interval_s: Annotated[float, Meta(gt=0)] = 1.0
    #: 1.0 replays in real time, 10.0 ten times faster; 0 as fast as the queue takes it.
    speed: Annotated[float, Meta(ge=0)] = 1.0
    #: Mark the replayed readings as historical data (Sparkplug ``is_historical``).
    historical: bool = True


DeviceConfig = SimulatorDevice | OpcUaDevice | CsvDevice


class MetricsConfig(_Strict, kw_only=True, frozen=True):
    """Prometheus metrics (``edge.metrics``) on ``http://<address>:<port>/metrics``."""

    #: Unset (the default): no metrics server.
    port: Port | None = None
    #: Loopback by default: a node exporter or a local Prometheus agent scrapes it.
    address: str = "127.0.0.1"


class AgentConfig(_Strict, kw_only=True, frozen=True):
    node: NodeConfig
    mqtt: MqttConfig
    queue: QueueConfig
    publish: PublishConfig = msgspec.field(default_factory=PublishConfig)
    sampling: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    alarms: list[AlarmRule] = msgspec.field(default_factory=list)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    devices: Annotated[list[DeviceConfig], Meta(min_length=1)]
    #: Deadband silence limit: a sensor is published at least this often.
    max_silence_s: Annotated[float, Meta(gt=0)] = 60.0

    def sensor_count(self) -> int:
        return sum(len(d.sensors) for d in self.devices)


def _check_semantics(cfg: AgentConfig) -> None:
    try:
        ids.check_site_id(cfg.node.site)
        ids.check_appliance_id(cfg.node.appliance, cfg.node.site)
    except ids.IdError as exc:
        raise ConfigError(f"{exc} - at `$.node`") from exc
    seen_devices: set[str] = set()
    for d_index, device in enumerate(cfg.devices):
        where = f"$.devices[{d_index}]"
        if not device.id or any(c in device.id for c in "+/#"):
            raise ConfigError(f"device id {device.id!r} is empty or has + / # - at `{where}.id`")
        if device.id in seen_devices:
            raise ConfigError(f"device id {device.id!r} appears twice - at `{where}.id`")
        seen_devices.add(device.id)
        seen_tags: set[str] = set()
        for s_index, sensor in enumerate(device.sensors):
            at = f"{where}.sensors[{s_index}]"
            if isinstance(device, OpcUaDevice) and not sensor.node_id:
                raise ConfigError(f"an OPC UA sensor needs a node_id - at `{at}.node_id`")
            spec = tags.TAGS.get(sensor.tag)
            if spec is None:
                raise ConfigError(f"unknown tag {sensor.tag!r} - at `{at}.tag`")
            if sensor.unit != spec.unit:
                raise ConfigError(
                    f"tag {sensor.tag} has unit {spec.unit!r}, got {sensor.unit!r} - at `{at}.unit`"
                )
            if sensor.tag in seen_tags:
                raise ConfigError(f"tag {sensor.tag} appears twice - at `{at}.tag`")
            seen_tags.add(sensor.tag)
        if isinstance(device, OpcUaDevice) and device.security == "SignAndEncrypt":
            for key in ("certificate", "private_key", "server_certificate"):
                if getattr(device, key) is None:
                    raise ConfigError(f"SignAndEncrypt needs {key} - at `{where}.{key}`")
    all_tags = {s.tag for d in cfg.devices for s in d.sensors}
    for r_index, rule in enumerate(cfg.alarms):
        if rule.tag not in all_tags:
            raise ConfigError(
                f"alarm rule on tag {rule.tag!r} no sensor reads - at `$.alarms[{r_index}].tag`"
            )


def parse_config(text: bytes | str, *, source: str = "<config>") -> AgentConfig:
    """Decode and validate a TOML configuration; errors say what and where."""
    raw = toml_to_builtins(text, source=source)
    if isinstance(raw, dict) and isinstance(raw.get("devices"), list):
        # ``source`` tags the device union; configs from before it existed mean the simulator.
        for device in raw["devices"]:
            if isinstance(device, dict):
                device.setdefault("source", "simulator")
    cfg = convert(raw, AgentConfig, source=source)
    try:
        _check_semantics(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return cfg


def load_config(path: Path) -> AgentConfig:
    return parse_config(read_bytes(path), source=str(path))


def read_password(cfg: MqttConfig) -> str | None:
    """The MQTT password from its file (stripped), or None."""
    return read_secret_file(cfg.password_file, "MQTT password")
