"""The legacy appliance software (``legacy-fleet.md``): detection, configuration translation,
unsent readings, hand-off file, backup and restore.

Pure Python (standard library + PyYAML), no Ansible import: the modules in ``ansible/library``
wrap it, and the tests load it directly. Every path is under ``root`` (``/`` on an appliance).
It runs on the release bundle's own interpreter (Python 3.11), never on the appliance's
2.7/3.5.

Errors: :class:`LegacyError` (with an anomaly ``code``) for everything the fleet must report.
"""

from __future__ import annotations

import configparser
import csv
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from typing import Any

import yaml

TAGS: dict[str, tuple[str, bool]] = {
    "DEPTH": ("ft", True), "HDTH": ("ft", False), "ROP": ("ft/h", True),
    "WOB": ("klbf", True), "HKLD": ("klbf", False), "RPM": ("rpm", True),
    "TQ": ("kft.lbf", False), "SPP": ("psi", False), "FLWI": ("gpm", False),
    "MW": ("ppg", False), "GAS": ("%", True), "H2S": ("ppm", True), "PIT": ("bbl", False),
    "VIB": ("g", False), "TEMP": ("degF", False), "BLKPOS": ("ft", False),
}  # fmt: skip

RELEASES: dict[str, str] = {
    "1.0.3": "v1.0", "1.4.1": "v1.4", "2.0.1": "v2.0", "2.3.0": "v2.3", "3.0.2": "v3.0",
    "3.1.0": "v3.1", "3.2.4": "v3.2", "4.0.1": "v4.0", "4.1.0": "v4.1", "4.2.2": "v4.2",
}  # fmt: skip
PRECISION = {"1": "s", "2": "ms", "3": "ms", "4": "ns"}

#: Everything a family's installation and data consist of (backed up, restored on rollback).
LEGACY_PATHS: dict[str, tuple[str, ...]] = {
    "1": ("opt/cdd/collector", "etc/cdd", "var/lib/cdd", "etc/init.d/cdd-collector"),
    "2": ("opt/cdd/agent", "etc/cdd", "var/lib/cdd", "etc/systemd/system/cdd-agent.service"),
    "3": (
        "usr/local/bin/cdd-edge", "usr/local/lib/cdd-edge", "etc/cdd-edge", "etc/default/cdd-edge",
        "var/lib/cdd-edge", "etc/systemd/system/cdd-edge.service",
    ),
    "4": (
        "opt/cdd-edge", "etc/cdd-edge", "var/lib/cdd-edge", "etc/systemd/system/cdd-edge4.service",
    ),
}  # fmt: skip
SERVICES = {
    "1": ("sysv", "cdd-collector"),
    "2": ("systemd", "cdd-agent"),
    "3": ("systemd", "cdd-edge"),
    "4": ("systemd", "cdd-edge4"),
}
#: The new release's own paths (removed on rollback).
AGENT_PATHS = (
    "etc/derrick", "var/lib/derrick", "opt/derrick", "var/log/derrick", "run/derrick-edge.pid",
    "etc/systemd/system/derrick-edge.service", "etc/init.d/derrick-edge",
    "etc/systemd/system/derrick-switch-watchdog.service", "etc/init.d/derrick-switch-watchdog",
    "run/derrick-switch-watchdog.pid",
)  # fmt: skip
STATE_FILE = "var/lib/derrick/state.json"
AGENT_CONFIG = "etc/derrick/agent.toml"
#: The agent's MQTT password (0600, written by the role from the vault; never in the TOML).
MQTT_PASSWORD_FILE = "etc/derrick/mqtt-password"  # noqa: S105 (a path)
SOURCES_FILE = "etc/derrick/legacy-sources.json"
HANDOFF_FILE = "var/lib/derrick/handoff.jsonl"
QUEUE_FILE = "var/lib/derrick/queue.db"
BACKUP_NAME = "legacy-backup.tar"


class LegacyError(Exception):
    """The appliance cannot be migrated as it is; ``code`` is the anomaly reported."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _p(root: str, rel: str) -> str:
    return os.path.join(root, rel.lstrip("/"))


def _read(root: str, rel: str) -> str | None:
    try:
        with open(_p(root, rel), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------ detection


def marker_release(where: str, text: str) -> str | None:
    """The release a version marker names, from its raw text: a ``VERSION`` file's content,
    ``cdd_agent/__init__.py``, the output of ``cdd-edge --version``, the target of
    ``opt/cdd-edge/current`` (also used on the controller, on what a shell probe printed)."""
    if where == "cdd_agent/__init__.py":
        m = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
        return m.group(1) if m else None
    if where == "cdd-edge --version":
        m = re.fullmatch(r"cdd-edge (\d+\.\d+\.\d+)", text.strip())
        return m.group(1) if m else None
    if where == "opt/cdd-edge/current":
        return os.path.basename(text.strip().rstrip("/"))
    return text.strip()


def _markers(root: str) -> list[tuple[str, str]]:
    """(where, release) of every version marker present."""
    texts: list[tuple[str, str | None]] = [
        ("opt/cdd/collector/VERSION", _read(root, "opt/cdd/collector/VERSION")),
        ("cdd_agent/__init__.py", _read(root, "opt/cdd/agent/lib/cdd_agent/__init__.py")),
        ("opt/cdd/agent/VERSION", _read(root, "opt/cdd/agent/VERSION")),
    ]
    binary = _p(root, "usr/local/bin/cdd-edge")
    if os.access(binary, os.X_OK):
        try:
            out = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        texts.append(("cdd-edge --version", out))
    link = _p(root, "opt/cdd-edge/current")
    if os.path.islink(link):
        texts.append(("opt/cdd-edge/current", os.readlink(link)))
    found: list[tuple[str, str]] = []
    for where, text in texts:
        release = marker_release(where, text) if text else None
        if release is not None:
            found.append((where, release))
    return found


def _layout_version(root: str) -> str | None:
    """The version the configuration format and data store say (legacy-fleet.md's differences)."""
    if os.path.isfile(_p(root, "etc/cdd/collector.ini")):
        ini = _ini(root)
        return "v1.4" if ini.has_option("collector", "hot_tags") else "v1.0"
    if os.path.isfile(_p(root, "etc/cdd/agent.yaml")):
        doc = yaml.safe_load(_read(root, "etc/cdd/agent.yaml") or "") or {}
        return "v2.3" if isinstance(doc.get("sensors"), dict) or "sampling" in doc else "v2.0"
    if os.path.isfile(_p(root, "etc/default/cdd-edge")):
        return "v3.2"
    if os.path.isfile(_p(root, "etc/cdd-edge/config.json")):
        doc = json.loads(_read(root, "etc/cdd-edge/config.json") or "{}")
        return "v3.1" if "tls" in doc else "v3.0"
    if os.path.isfile(_p(root, "etc/cdd-edge/edge.toml")):
        with open(_p(root, "etc/cdd-edge/edge.toml"), "rb") as f:
            doc = tomllib.load(f)
        if "mqtt" in doc:
            return "v4.2"
        return "v4.1" if "opcua" in doc else "v4.0"
    return None


def _ini(root: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(_read(root, "etc/cdd/collector.ini") or "")
    return ini


def agent_state(root: str) -> dict[str, Any] | None:
    text = _read(root, STATE_FILE)
    return json.loads(text) if text else None


def detect(root: str) -> dict[str, Any]:
    """The legacy version, how it was known, the anomalies, and the migration plan's inputs."""
    anomalies: list[dict[str, str]] = []
    state = agent_state(root)
    facts: dict[str, Any] = {
        "version": None, "release": None, "inferred": False, "anomalies": anomalies,
        "upgradable": False, "converged": bool(state and state.get("state") == "committed"),
        "agent_state": state.get("state") if state else None,
    }  # fmt: skip
    try:
        layout = _layout_version(root)
    except (ValueError, yaml.YAMLError, configparser.Error) as exc:
        anomalies.append({"code": "invalid-config", "detail": f"does not parse: {exc}"})
        return facts
    markers = _markers(root)
    releases = {r for _, r in markers}
    if layout is None:
        if facts["converged"]:
            facts["version"] = state.get("version") if state else None
            return facts
        anomalies.append({"code": "no-legacy", "detail": "no legacy configuration found"})
        return facts
    if not markers:
        anomalies.append(
            {"code": "no-marker", "detail": f"no version marker; inferred {layout} from layout"}
        )
        facts["inferred"] = True
        version = layout
    elif len(releases) > 1:
        if releases == {"2.0.1", "2.3.0"}:
            anomalies.append(
                {
                    "code": "aborted-upgrade",
                    "detail": f"markers say 2.0.1 and 2.3.0; agent.yaml is {layout}'s format",
                }
            )
            version = layout
        else:
            anomalies.append({"code": "conflicting-markers", "detail": str(sorted(releases))})
            return facts
    else:
        release = releases.pop()
        version = RELEASES.get(release, "")
        if not version:
            anomalies.append({"code": "unknown-release", "detail": release})
            return facts
    facts["version"] = version
    facts["release"] = {v: r for r, v in RELEASES.items()}[version]
    facts["precision"] = PRECISION[version[1]]
    facts["service"] = dict(zip(("manager", "name"), SERVICES[version[1]], strict=True))
    try:
        plan = read_config(root, version)
    except LegacyError as exc:
        anomalies.append({"code": exc.code, "detail": exc.detail})
        return facts
    facts["config"] = plan
    facts["unsent"] = sum(1 for _ in unsent_readings(root, version, plan))
    facts["upgradable"] = not facts["converged"]
    return facts


# ------------------------------------------------------------------ configuration


def _sensor(tag: Any, unit: Any, hot: Any, source: str, **extra: float) -> dict[str, Any]:
    if not isinstance(tag, str) or not tag:
        raise LegacyError("invalid-config", f"a sensor has no tag (source {source})")
    if tag not in TAGS:
        raise LegacyError("invalid-config", f"unknown tag {tag!r}")
    if unit != TAGS[tag][0]:
        raise LegacyError("invalid-config", f"{tag}: unit {unit!r} is not {TAGS[tag][0]!r}")
    if hot is not None and not isinstance(hot, bool):
        raise LegacyError("invalid-config", f"{tag}: hot {hot!r} is not a boolean")
    return {"tag": tag, "unit": unit, "hot": TAGS[tag][1] if hot is None else hot,
            "source": source, **extra}  # fmt: skip


def _daq(value: Any, tag: Any) -> str:
    try:
        addr = int(str(value))
    except ValueError:
        raise LegacyError("invalid-config", f"{tag}: address {value!r}") from None
    if not 0 <= addr <= 31:
        raise LegacyError("invalid-config", f"{tag}: address {addr} not in 0-31")
    return f"daq:{addr}"


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LegacyError("invalid-config", f"{what} {text!r} is not a number") from None


def _per_min(sensors: int, interval_s: float) -> int:
    if interval_s <= 0:
        raise LegacyError("invalid-config", f"sampling interval {interval_s} <= 0")
    return max(1, round(sensors * 60 / interval_s))


def read_config(root: str, version: str) -> dict[str, Any]:
    """Appliance, site, sensors (tag, unit, hot, source, v1.x scale/offset), sampling."""
    family = version[1]
    sensors: list[dict[str, Any]] = []
    opcua: str | None = None
    try:
        if family == "1":
            ini = _ini(root)
            c = ini["collector"]
            appliance, site = c["appliance_id"], c["site_id"]
            hot_tags = (
                set(filter(None, c.get("hot_tags", "").split(","))) if version == "v1.4" else None
            )
            ch = 0
            while ini.has_section(f"channel:{ch}"):
                s = ini[f"channel:{ch}"]
                tag = s.get("tag")
                sensors.append(
                    _sensor(tag, s.get("unit"), None if hot_tags is None else tag in hot_tags,
                            f"daq:{ch}", scale=_number(s.get("scale", ""), f"{tag} scale"),
                            offset=_number(s.get("offset", ""), f"{tag} offset"))
                )  # fmt: skip
                ch += 1
            interval = _number(c["interval_s"], "interval_s")
            normal = alarm = _per_min(len(sensors), interval)
        elif family == "2":
            doc = yaml.safe_load(_read(root, "etc/cdd/agent.yaml") or "")
            appliance, site = doc["appliance"], doc["site"]
            if version == "v2.3":
                for tag, s in doc["sensors"].items():
                    sensors.append(
                        _sensor(tag, s.get("unit"), s.get("hot"), _daq(s.get("address"), tag))
                    )
                normal = _per_min(len(sensors), float(doc["sampling"]["normal_s"]))
                alarm = _per_min(
                    len(sensors), float(doc["sampling"].get("alarm_s", doc["sampling"]["normal_s"]))
                )
            else:
                for s in doc["sensors"]:
                    sensors.append(
                        _sensor(
                            s.get("tag"), s.get("unit"), None, _daq(s.get("address"), s.get("tag"))
                        )
                    )
                normal = alarm = _per_min(len(sensors), float(doc["sample_interval"]))
        elif family == "3":
            if version == "v3.2":
                env = dict(
                    line.split("=", 1)
                    for line in (_read(root, "etc/default/cdd-edge") or "").splitlines()
                    if "=" in line and not line.startswith("#")
                )
                appliance, site = env["CDD_DEVICE_ID"], env["CDD_SITE"]
                interval_ms = float(env["CDD_INTERVAL_MS"])
                rows = list(
                    csv.DictReader(io.StringIO(_read(root, "etc/cdd-edge/channels.csv") or ""))
                )
                channels = [{"tag": r["tag"], "unit": r["unit"], "addr": r["addr"]} for r in rows]
            else:
                doc = json.loads(_read(root, "etc/cdd-edge/config.json") or "")
                appliance, site = doc["device"]["id"], doc["device"]["site"]
                interval_ms = float(doc["interval_ms"])
                channels = doc["channels"]
            for c3 in channels:
                sensors.append(
                    _sensor(
                        c3.get("tag"), c3.get("unit"), None, _daq(c3.get("addr"), c3.get("tag"))
                    )
                )
            normal = alarm = _per_min(len(sensors), interval_ms / 1000)
        else:
            with open(_p(root, "etc/cdd-edge/edge.toml"), "rb") as f:
                doc = tomllib.load(f)
            appliance, site = doc["device"]["id"], doc["device"]["site"]
            if doc.get("opcua"):
                opcua = doc["opcua"][0]["endpoint"]
            for s in doc.get("sensor", []):
                src = str(s.get("source", ""))
                if src.startswith("modbus:"):
                    source = _daq(src[7:], s.get("tag"))
                elif src.startswith("opcua:") and opcua:
                    source = src
                else:
                    raise LegacyError("invalid-config", f"{s.get('tag')}: source {src!r}")
                sensors.append(_sensor(s.get("tag"), s.get("unit"), s.get("hot"), source))
            normal = int(doc["sampling"]["normal_per_min"])
            alarm = int(doc["sampling"].get("alarm_per_min", normal))
    except LegacyError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LegacyError("invalid-config", f"missing or malformed setting: {exc!r}") from None
    if not sensors:
        raise LegacyError("invalid-config", "no sensors")
    tags = [s["tag"] for s in sensors]
    if len(set(tags)) != len(tags):
        raise LegacyError("invalid-config", "a tag appears twice")
    daq = [s["source"] for s in sensors if s["source"].startswith("daq:")]
    if len(set(daq)) != len(daq):
        raise LegacyError("invalid-config", "a DAQ channel appears twice")
    if not re.fullmatch(r"s\d{3,}", str(site)) or not str(appliance).startswith(f"{site}-a"):
        raise LegacyError("invalid-config", f"appliance {appliance!r} / site {site!r}")
    return {"appliance": appliance, "site": site, "sensors": sensors,
            "normal_per_min": normal, "alarm_per_min": alarm, "opcua_endpoint": opcua}  # fmt: skip


# ------------------------------------------------------------------ unsent readings


def unsent_readings(
    root: str, version: str, plan: dict[str, Any]
) -> Iterator[tuple[str, int, float]]:
    """(tag, ts_ns, engineering value) of every unsent reading, at the stored precision."""
    family = version[1]
    if family == "1":
        spool = _p(root, "var/lib/cdd/spool")
        mark = _read(root, "var/lib/cdd/spool/.collected")
        watermark = int(mark.strip()) if mark and mark.strip() else None
        by_ch = {int(s["source"][4:]): s for s in plan["sensors"]}
        for name in sorted(os.listdir(spool)) if os.path.isdir(spool) else []:
            if not re.fullmatch(r"\d{8}\.csv(\.gz)?", name):
                continue
            path = os.path.join(spool, name)
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
                for line in f:
                    if not line.strip():
                        continue
                    t, ch, raw = (int(x) for x in line.strip().split(","))
                    if watermark is not None and t <= watermark:
                        continue
                    s = by_ch[ch]
                    yield s["tag"], t * 10**9, raw * s["scale"] + s["offset"]
    elif family == "2":
        query = "SELECT ts, tag, value FROM readings WHERE collected = 0"
        for ts, tag, value in _sql(root, "var/lib/cdd/buffer.db", query):
            yield tag, round(ts * 1000) * 10**6, value
    elif family == "3":
        queue = _p(root, "var/lib/cdd-edge/queue")
        for name in sorted(os.listdir(queue)) if os.path.isdir(queue) else []:
            if not re.fullmatch(r"\d{6}\.jsonl(\.gz)?", name):
                continue
            opener = gzip.open if name.endswith(".gz") else open
            with opener(os.path.join(queue, name), "rt", encoding="utf-8") as f:  # type: ignore[operator]
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        yield r["tag"], int(r["t"]) * 10**6, float(r["v"])
    else:
        where = " WHERE sent = 0" if version == "v4.2" else ""
        for ts_ns, tag, value in _sql(root, "var/lib/cdd-edge/queue.db",
                                      "SELECT ts_ns, tag, value FROM queue" + where):  # fmt: skip
            yield tag, int(ts_ns), value


def _sql(root: str, rel: str, query: str) -> list[tuple[Any, ...]]:
    path = _p(root, rel)
    if not os.path.exists(path):
        return []
    # read-only and immutable: never touches the legacy file (no -wal/-shm created)
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def handoff_text(root: str, version: str, plan: dict[str, Any], device: str = "daq") -> str:
    """The ``derrick-legacy-handoff`` v1 file (docs/legacy-handoff.md), deterministic."""
    header = {"format": "derrick-legacy-handoff", "version": 1, "appliance": plan["appliance"],
              "source_version": version, "precision": PRECISION[version[1]]}  # fmt: skip
    rows = sorted(unsent_readings(root, version, plan), key=lambda r: (r[1], r[0]))
    lines = [header] + [
        {"device": device, "tag": tag, "ts_ns": ts_ns, "value": float(value)}
        for tag, ts_ns, value in rows
    ] + [{"end": "derrick-legacy-handoff", "readings": len(rows)}]  # fmt: skip
    return "".join(json.dumps(x, allow_nan=False, separators=(",", ":")) + "\n" for x in lines)


# ------------------------------------------------------------------ agent configuration


def _q(value: str) -> str:
    return json.dumps(value)


def agent_toml(plan: dict[str, Any], root: str, version: str, agent: dict[str, Any]) -> str:
    """The new agent's TOML (``edge/config.py``'s schema) carrying the legacy settings over."""
    servers = ", ".join(
        f"{{host = {_q(s['host'])}, port = {int(s.get('port', 1883))}}}"
        for s in agent["mqtt_servers"]
    )
    lines = [
        f"# {agent.get('managed', 'Managed by Ansible (derrick_migrate)')}",
        f"# Migrated from legacy {version}; sources, scale and offset: {SOURCES_FILE}",
        "[node]",
        f"site = {_q(plan['site'])}",
        f"appliance = {_q(plan['appliance'])}",
        "",
        "[mqtt]",
        f"servers = [{servers}]",
        f"primary_host_id = {_q(agent.get('primary_host_id', 'derrick'))}",
        f"wait_for_primary_host = {str(agent.get('wait_for_primary_host', True)).lower()}",
        *([f"username = {_q(agent['mqtt_username'])}"] if agent.get("mqtt_username") else []),
        *(
            [f"password_file = {_q(_p(root, MQTT_PASSWORD_FILE))}"]
            if str(agent.get("mqtt_password_set", False)).lower() == "true"
            else []
        ),
        "",
        "[queue]",
        f"path = {_q(_p(root, QUEUE_FILE))}",
        "",
        "[sampling]",
        f"normal_per_min = {plan['normal_per_min']}",
        f"alarm_per_min = {plan['alarm_per_min']}",
        "",
    ]
    publish = agent.get("publish") or {}
    if publish:
        lines.append("[publish]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in sorted(publish.items())]
        lines.append("")
    lines += ["[[devices]]", f"id = {_q(agent.get('device_id', 'daq'))}", "sensors = ["]
    for s in plan["sensors"]:
        channel = f", channel = {s['source'][4:]}" if s["source"].startswith("daq:") else ""
        lines.append(
            f"  {{tag = {_q(s['tag'])}, unit = {_q(s['unit'])}, "
            f"hot = {str(s['hot']).lower()}{channel}}},"
        )
    lines.append("]")
    return "\n".join(lines) + "\n"


def sources_json(plan: dict[str, Any], version: str) -> str:
    """What the agent schema cannot carry yet: every sensor's source, v1.x scale and offset."""
    doc = {"from": version, "opcua_endpoint": plan["opcua_endpoint"], "sensors": plan["sensors"]}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


# ------------------------------------------------------------------ backup and restore


def legacy_paths(root: str, version: str) -> list[str]:
    return [p for p in LEGACY_PATHS[version[1]] if os.path.lexists(_p(root, p))]


def write_backup(root: str, version: str, backup_dir: str) -> tuple[str, str]:
    """Tar the installation and data into ``backup_dir`` (tmp + fsync + rename) -> (path, sha256).

    Raises LegacyError("disk-full") when it cannot be written; nothing is left behind then.
    """
    final = os.path.join(backup_dir, BACKUP_NAME)
    tmp = final + ".tmp"
    try:
        os.makedirs(backup_dir, exist_ok=True)
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in legacy_paths(root, version):
                    tar.add(_p(root, rel), arcname=rel)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        code = "disk-full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "backup-failed"
        raise LegacyError(
            code, f"cannot write the backup in {backup_dir}: {exc.strerror}"
        ) from None
    return final, file_sha256(final)


def write_atomic(path: str, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` (parents created): a temporary file, fsync, rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def restore_backup(root: str, backup: str) -> list[str]:
    """Put the installation and data back exactly as backed up; remove the new release."""
    with tarfile.open(backup) as tar:
        members = tar.getmembers()
        roots = sorted({_top(m.name) for m in members})
        for rel in roots:
            _remove(_p(root, rel))
        tar.extractall(root, filter="tar")
    for rel in AGENT_PATHS:
        _remove(_p(root, rel))
    return roots


def _top(name: str) -> str:
    for family in LEGACY_PATHS.values():
        for rel in family:
            if name == rel or name.startswith(rel + "/"):
                return rel
    raise LegacyError("bad-backup", f"unexpected member {name}")
