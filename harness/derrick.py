"""Derrick's own programs as processes: ingest workers and edge agents, started through
their command lines (``python -m ingest run``, ``python -m edge run``) with generated
configuration files, exactly as an operator would run them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.process import ManagedProcess

#: Tags of a simulated appliance: all sixteen of the legacy fleet.
ALL_TAGS: tuple[str, ...] = (
    "DEPTH", "HDTH", "ROP", "WOB", "HKLD", "RPM", "TQ", "SPP",
    "FLWI", "MW", "GAS", "H2S", "PIT", "VIB", "TEMP", "BLKPOS",
)  # fmt: skip

UNITS: dict[str, str] = {
    "DEPTH": "ft", "HDTH": "ft", "ROP": "ft/h", "WOB": "klbf", "HKLD": "klbf", "RPM": "rpm",
    "TQ": "kft.lbf", "SPP": "psi", "FLWI": "gpm", "MW": "ppg", "GAS": "%", "H2S": "ppm",
    "PIT": "bbl", "VIB": "g", "TEMP": "degF", "BLKPOS": "ft",
}  # fmt: skip


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    return json.dumps(value)


@dataclass
class SimulatedDevice:
    id: str
    tags: Sequence[str] = ALL_TAGS
    seed: int = 0
    #: While this file exists the simulated DAQ is unreachable (DDEATH, then DBIRTH).
    fault_file: Path | None = None


@dataclass
class OpcUaDeviceSpec:
    """A device read from an OPC UA server (``harness.opcua_rig`` names ``<prefix>.<TAG>``)."""

    id: str
    endpoint: str
    tags: Sequence[str] = ALL_TAGS
    prefix: str = "Rig"
    namespace_index: int = 2
    #: ``SignAndEncrypt`` needs the three files below.
    security: str = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None

    def toml(self) -> list[str]:
        lines = [
            "[[devices]]",
            f"id = {_q(self.id)}",
            'source = "opcua"',
            f"endpoint = {_q(self.endpoint)}",
            f"security = {_q(self.security)}",
        ]
        for key in ("certificate", "private_key", "server_certificate"):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key} = {_q(str(value))}")
        lines.append("sensors = [")
        lines += [
            f"  {{tag = {_q(t)}, unit = {_q(UNITS[t])}, "
            f"node_id = {_q(f'ns={self.namespace_index};s={self.prefix}.{t}')}}},"
            for t in self.tags
        ]
        return [*lines, "]", ""]


@dataclass
class EdgeSpec:
    """What one simulated appliance runs."""

    site: str
    appliance: str
    devices: list[SimulatedDevice | OpcUaDeviceSpec] = field(default_factory=list)
    normal_per_min: int = 150
    alarm_per_min: int = 3000
    publish_interval_ms: int = 1000
    ack_timeout_ms: int = 15000
    link_bytes_per_s: int = 12_500
    primary_host_id: str = "derrick"
    #: False: publish births at once instead of waiting for the Primary Host's STATE.
    wait_for_primary_host: bool = True
    #: Put the datatype on every metric of data messages (for decoders that need it).
    datatype_in_data: bool = False
    #: Compress live data messages when it pays (the agent's default; off for decoders that
    #: cannot inflate Sparkplug compressed payloads).
    compress_live: bool = True
    extra: str = ""
    #: Broker credentials (a broker without anonymous access).
    mqtt_username: str | None = None
    mqtt_password_file: Path | None = None

    def toml(self, mqtt_ports: Sequence[int], queue_path: Path) -> str:
        servers = ", ".join(f'{{host = "127.0.0.1", port = {p}}}' for p in mqtt_ports)
        lines = [
            "[node]",
            f"site = {_q(self.site)}",
            f"appliance = {_q(self.appliance)}",
            "",
            "[mqtt]",
            f"servers = [{servers}]",
            f"primary_host_id = {_q(self.primary_host_id)}",
            f"wait_for_primary_host = {str(self.wait_for_primary_host).lower()}",
            *([f"username = {_q(self.mqtt_username)}"] if self.mqtt_username else []),
            *(
                [f"password_file = {_q(str(self.mqtt_password_file))}"]
                if self.mqtt_password_file
                else []
            ),
            "",
            "[queue]",
            f"path = {_q(str(queue_path))}",
            "",
            "[publish]",
            f"interval_ms = {self.publish_interval_ms}",
            f"ack_timeout_ms = {self.ack_timeout_ms}",
            f"link_bytes_per_s = {self.link_bytes_per_s}",
            f"datatype_in_data = {str(self.datatype_in_data).lower()}",
            f"compress_live = {str(self.compress_live).lower()}",
            "",
            "[sampling]",
            f"normal_per_min = {self.normal_per_min}",
            f"alarm_per_min = {self.alarm_per_min}",
            "",
        ]
        for device in self.devices:
            if isinstance(device, OpcUaDeviceSpec):
                lines += device.toml()
                continue
            lines += [
                "[[devices]]",
                f"id = {_q(device.id)}",
                f"seed = {device.seed}",
                *([f"fault_file = {_q(str(device.fault_file))}"] if device.fault_file else []),
                "sensors = [",
            ]
            lines += [f"  {{tag = {_q(t)}, unit = {_q(UNITS[t])}}}," for t in device.tags]
            lines += ["]", ""]
        return "\n".join(lines) + self.extra + "\n"


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def edge_process(spec: EdgeSpec, base_dir: Path, mqtt_ports: Sequence[int]) -> ManagedProcess:
    """An edge agent process for ``spec``; its queue and log live in ``base_dir``."""
    base_dir.mkdir(parents=True, exist_ok=True)
    config = base_dir / "agent.toml"
    config.write_text(spec.toml(mqtt_ports, base_dir / "queue.db"), encoding="utf-8")
    return ManagedProcess(
        f"edge-{spec.appliance}",
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        log_path=base_dir / "agent.log",
        env=python_env(),
        cwd=base_dir,
    )


def opcua_rig_process(
    base_dir: Path, port: int, *, seed: int = 0, args: Sequence[str] = ()
) -> ManagedProcess:
    """An OPC UA rig server (``python -m harness.opcua_rig``); it records every value it
    published in ``base_dir/published.jsonl`` and its sampling interval in ``status.json``."""
    base_dir.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        f"opcua-rig-{port}",
        [
            sys.executable,
            "-m",
            "harness.opcua_rig",
            "--port",
            str(port),
            "--seed",
            str(seed),
            "--record",
            str(base_dir / "published.jsonl"),
            "--status",
            str(base_dir / "status.json"),
            *args,
        ],
        log_path=base_dir / "rig.log",
        env=python_env(),
        cwd=base_dir,
    )


def _service(
    name: str,
    module: str,
    base_dir: Path,
    config_lines: Sequence[str],
    secrets: dict[str, str],
    *,
    subcommand: Sequence[str] = ("run",),
    pre: Sequence[str] = (),
) -> ManagedProcess:
    """``python -m <module> [pre] <subcommand> --config <base_dir>/<module>.toml`` with the
    config written from ``config_lines``; secrets go in the environment, never the file."""
    base_dir.mkdir(parents=True, exist_ok=True)
    config = base_dir / f"{module}.toml"
    config.write_text("\n".join([*config_lines, ""]), encoding="utf-8")
    return ManagedProcess(
        name,
        [sys.executable, "-m", module, *pre, *subcommand, "--config", str(config)],
        log_path=base_dir / f"{module}.log",
        env={**python_env(), **secrets},
        cwd=base_dir,
    )


def ingest_process(
    base_dir: Path,
    *,
    mqtt_port: int,
    ilp_conf: str,
    pg_dsn: str,
    table_prefix: str = "",
    worker: str = "w0",
    groups: Sequence[str] = ("+",),
    primary_host_id: str = "derrick",
    extra: str = "",
    mqtt_username: str | None = None,
    mqtt_password_file: Path | None = None,
) -> ManagedProcess:
    """An ingest worker process; secrets reach it through the environment, not the file."""
    return _service(
        f"ingest-{worker}",
        "ingest",
        base_dir,
        [
            "[mqtt]",
            'host = "127.0.0.1"',
            f"port = {mqtt_port}",
            *([f"username = {_q(mqtt_username)}"] if mqtt_username else []),
            *([f"password_file = {_q(str(mqtt_password_file))}"] if mqtt_password_file else []),
            "",
            "[questdb]",
            f"table_prefix = {_q(table_prefix)}",
            "",
            "[ingest]",
            f"worker = {_q(worker)}",
            f"primary_host_id = {_q(primary_host_id)}",
            f"groups = [{', '.join(_q(g) for g in groups)}]",
            extra,
        ],
        {"DERRICK_QUESTDB_ILP": ilp_conf, "DERRICK_QUESTDB_PG": pg_dsn},
    )


def alerts_process(
    base_dir: Path,
    *,
    mqtt_port: int,
    registry_dsn: str,
    questdb_dsn: str,
    table_prefix: str = "",
    extra: str = "",
) -> ManagedProcess:
    """The alert evaluator and notifier (``python -m alerts run``); the DSNs reach it through
    the environment, the file only names the variables. ``extra``: more TOML (sections)."""
    return _service(
        f"alerts-{base_dir.name}",
        "alerts",
        base_dir,
        [
            "[mqtt]",
            'host = "127.0.0.1"',
            f"port = {mqtt_port}",
            f"client_id = {_q(f'alerts-{base_dir.name}')}",
            "",
            "[registry]",
            'dsn_env = "DERRICK_PG_DSN"',
            "",
            "[questdb]",
            'dsn_env = "DERRICK_QUESTDB_PG"',
            f"table_prefix = {_q(table_prefix)}",
            "",
            extra,
        ],
        {"DERRICK_PG_DSN": registry_dsn, "DERRICK_QUESTDB_PG": questdb_dsn},
    )


def api_process(
    base_dir: Path,
    *,
    port: int,
    registry_dsn: str,
    questdb_dsn: str,
    table_prefix: str = "",
    kpi_group: str = "derrick-cloud",
    pool_max: int = 8,
    metrics_port: int | None = None,
    log_format: str = "text",
) -> ManagedProcess:
    """The customer API (``python -m api serve``) on ``127.0.0.1:port``; the DSNs reach it
    through the environment, the file only names the variables. ``metrics_port``: its
    Prometheus listener (``[metrics]``)."""
    return _service(
        f"api-{port}",
        "api",
        base_dir,
        [
            "[server]",
            'host = "127.0.0.1"',
            f"port = {port}",
            "",
            "[registry]",
            'dsn_env = "DERRICK_PG_DSN"',
            f"pool_max = {pool_max}",
            "",
            "[questdb]",
            'dsn_env = "DERRICK_QUESTDB_PG"',
            f"table_prefix = {_q(table_prefix)}",
            f"kpi_group = {_q(kpi_group)}",
            f"pool_max = {pool_max}",
            "",
            *([f"[metrics]\nport = {metrics_port}"] if metrics_port else []),
        ],
        {"DERRICK_PG_DSN": registry_dsn, "DERRICK_QUESTDB_PG": questdb_dsn},
        subcommand=("serve",),
        pre=("--log-format", log_format),
    )
