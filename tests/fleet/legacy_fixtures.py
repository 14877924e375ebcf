"""Legacy appliances built from ``/work/shared/legacy-fleet.md``, under a root directory.

``build_appliance(root, "s017-a042", "v2.3", seed=7)`` lays out every file of that version
(marker, configuration, service, program, local data with collected and unsent readings) and
returns an :class:`Expected`: what a correct convergence must produce (the migrated sensors and
sampling, every unsent reading with its original timestamp in ns and its engineering value),
or, for an anomaly that must be left alone, that the appliance stays byte for byte as built.

Anomalies (``anomaly=``): ``no-marker`` (any version), ``aborted-upgrade`` (v2.0, v2.3),
``invalid-config`` (any), ``disk-full`` (any: the test mounts a small tmpfs at
:data:`BACKUP_DIR`, bigger than nothing but smaller than the installation), ``unreachable``
(any: built normally, the inventory makes it unreachable).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

VERSIONS: tuple[str, ...] = (
    "v1.0", "v1.4", "v2.0", "v2.3", "v3.0", "v3.1", "v3.2", "v4.0", "v4.1", "v4.2",
)  # fmt: skip
RELEASE: dict[str, str] = {
    "v1.0": "1.0.3", "v1.4": "1.4.1", "v2.0": "2.0.1", "v2.3": "2.3.0", "v3.0": "3.0.2",
    "v3.1": "3.1.0", "v3.2": "3.2.4", "v4.0": "4.0.1", "v4.1": "4.1.0", "v4.2": "4.2.2",
}  # fmt: skip
ANOMALIES: tuple[str, ...] = (
    "no-marker", "aborted-upgrade", "invalid-config", "disk-full", "unreachable",
)  # fmt: skip
#: Anomalies whose appliance must be reported and left untouched.
UNTOUCHED: frozenset[str] = frozenset({"invalid-config", "disk-full", "unreachable"})
#: Where the migration writes its backup (a tmpfs there makes ``disk-full`` real).
BACKUP_DIR = "var/backups/derrick"

#: tag -> (unit, hot default, typical low, high): the table of legacy-fleet.md.
TAGS: dict[str, tuple[str, bool, float, float]] = {
    "DEPTH": ("ft", True, 0, 30000), "HDTH": ("ft", False, 0, 30000),
    "ROP": ("ft/h", True, 0, 500), "WOB": ("klbf", True, 0, 80),
    "HKLD": ("klbf", False, 0, 800), "RPM": ("rpm", True, 0, 250),
    "TQ": ("kft.lbf", False, 0, 40), "SPP": ("psi", False, 0, 7500),
    "FLWI": ("gpm", False, 0, 1500), "MW": ("ppg", False, 8, 18),
    "GAS": ("%", True, 0, 100), "H2S": ("ppm", True, 0, 100),
    "PIT": ("bbl", False, 0, 1500), "VIB": ("g", False, 0, 20),
    "TEMP": ("degF", False, 40, 300), "BLKPOS": ("ft", False, 0, 150),
}  # fmt: skip

#: The installation's program file size: a tmpfs of 64 KiB cannot hold its backup.
PROGRAM_BYTES = 96 * 1024


@dataclass(frozen=True)
class Sensor:
    tag: str
    unit: str
    hot: bool
    #: ``daq:<channel>`` or ``opcua:<node id>``.
    source: str
    scale: float | None = None
    offset: float | None = None


@dataclass(frozen=True)
class Reading:
    tag: str
    ts_ns: int
    value: float


@dataclass(frozen=True)
class Expected:
    appliance: str
    site: str
    #: The version really running (what detection must report).
    version: str
    anomaly: str | None
    #: Must the rollout converge it (else: report it, leave it byte for byte untouched)?
    converge: bool
    #: Detection must say the version was inferred from the layout.
    inferred: bool
    sensors: tuple[Sensor, ...]
    normal_per_min: int
    alarm_per_min: int
    precision: str
    #: Every unsent reading, in engineering units, original timestamp in ns.
    unsent: tuple[Reading, ...]
    #: Collected readings still on disk (must NOT be handed over).
    collected: int
    opcua_endpoint: str | None = None


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    path.chmod(mode)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _value(rng: random.Random, tag: str) -> float:
    _, _, low, high = TAGS[tag]
    return round(rng.uniform(low, high), rng.choice((1, 2, 3)))


class _Builder:
    def __init__(
        self, root: Path, appliance: str, version: str, rng: random.Random, now_s: int
    ) -> None:
        self.root = root
        self.appliance = appliance
        self.site = appliance.split("-", 1)[0]
        self.version = version
        self.rng = rng
        self.now_s = now_s
        n = rng.randint(4, 16)
        self.tags = rng.sample(sorted(TAGS), n)
        self.channels = rng.sample(range(32), n)

    def p(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def program(self, rel: str) -> None:
        _write(self.p(rel), self.rng.randbytes(PROGRAM_BYTES), 0o755)

    def times_ms(self, count: int) -> list[int]:
        """Reading times over the last ~30 hours (so v1.x spans two UTC days), ascending."""
        start = (self.now_s - 30 * 3600) * 1000
        return sorted(start + self.rng.randrange(29 * 3600 * 1000) for _ in range(count))

    def hot(self, tag: str, own: bool | None) -> bool:
        return TAGS[tag][1] if own is None else own


def _v1(b: _Builder, anomaly: str | None) -> tuple[list[Sensor], int, int, list[Reading], int]:
    v14 = b.version == "v1.4"
    interval_s = b.rng.choice((30, 60))
    hot_tags = [t for t in b.tags if b.rng.random() < 0.3] if v14 else []
    ini = [
        "[collector]",
        f"appliance_id = {b.appliance}",
        f"site_id = {b.site}",
        "poll_port = 8080",
        f"interval_s = {interval_s}",
    ]
    if v14:
        ini.append(f"hot_tags = {','.join(hot_tags)}")
    sensors: list[Sensor] = []
    for ch, tag in enumerate(b.tags):
        scale = b.rng.choice((0.01, 0.05, 0.1, 0.25, 0.5))
        offset = b.rng.choice((0.0, -12.5, 1.5))
        unit = TAGS[tag][0]
        scale_text = repr(scale)
        if anomaly == "invalid-config" and ch == len(b.tags) - 1:
            scale_text = "0.5%"
        ini += ["", f"[channel:{ch}]", f"tag = {tag}", f"unit = {unit}"]
        ini += [f"scale = {scale_text}", f"offset = {offset!r}"]
        sensors.append(
            Sensor(tag, unit, b.hot(tag, tag in hot_tags if v14 else None), f"daq:{ch}",
                   scale, offset)
        )  # fmt: skip
    _write(b.p("/etc/cdd/collector.ini"), "\n".join(ini) + "\n")
    if anomaly != "no-marker":
        _write(b.p("/opt/cdd/collector/VERSION"), RELEASE[b.version] + "\n")
    b.program("/opt/cdd/collector/cdd_collector.pyc")
    _write(
        b.p("/etc/init.d/cdd-collector"),
        "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: cdd-collector\n### END INIT INFO\n"
        'exec /usr/bin/python2.7 /opt/cdd/collector/cdd_collector.pyc "$@"\n',
        0o755,
    )
    times = [t // 1000 for t in b.times_ms(b.rng.randint(20, 40))]
    watermark = times[len(times) // 3]
    rows = [(t, b.rng.randrange(len(b.tags)), b.rng.randrange(65536)) for t in times]
    days: dict[str, list[str]] = {}
    unsent: list[Reading] = []
    for t, ch, raw in rows:
        day = datetime.fromtimestamp(t, UTC).strftime("%Y%m%d")
        days.setdefault(day, []).append(f"{t},{ch},{raw}\n")
        if t > watermark:
            s = sensors[ch]
            assert s.scale is not None and s.offset is not None
            unsent.append(Reading(s.tag, t * 10**9, raw * s.scale + s.offset))
    today = datetime.fromtimestamp(b.now_s, UTC).strftime("%Y%m%d")
    spool = b.p("/var/lib/cdd/spool")
    for day, lines in days.items():
        data = "".join(lines).encode()
        if v14 and day != today:
            _write(spool / f"{day}.csv.gz", _gz(data))
        else:
            _write(spool / f"{day}.csv", data)
    _write(spool / ".collected", f"{watermark}\n")
    per_min = len(b.tags) * 60 // interval_s
    return sensors, per_min, per_min, unsent, len(rows) - len(unsent)


def _v2(b: _Builder, anomaly: str | None) -> tuple[list[Sensor], int, int, list[Reading], int]:
    v23 = b.version == "v2.3"
    lines = [f"appliance: {b.appliance}", f"site: {b.site}"]
    normal_s = b.rng.choice((30, 60))
    alarm_s = b.rng.choice((2, 5, 10)) if v23 else normal_s
    sensors: list[Sensor] = []
    if v23:
        lines += ["sampling:", f"  normal_s: {normal_s}", f"  alarm_s: {alarm_s}", "sensors:"]
    else:
        lines += [f"sample_interval: {normal_s}", "sensors:"]
    for i, (tag, addr) in enumerate(zip(b.tags, b.channels, strict=True)):
        unit = TAGS[tag][0]
        own_hot = b.rng.random() < 0.3 if v23 else None
        sensors.append(Sensor(tag, unit, b.hot(tag, own_hot), f"daq:{addr}"))
        broken = anomaly == "invalid-config" and i == len(b.tags) - 1
        if v23:
            key = "''" if broken else tag
            lines.append(
                f"  {key}: {{unit: {json.dumps(unit)}, address: {addr}, "
                f"hot: {str(own_hot).lower()}}}"
            )
        elif broken:  # a sensor without a tag
            lines += [f"  - unit: {json.dumps(unit)}", f"    address: {addr}"]
        else:
            lines += [f"  - tag: {tag}", f"    unit: {json.dumps(unit)}", f"    address: {addr}"]
    _write(b.p("/etc/cdd/agent.yaml"), "\n".join(lines) + "\n")
    init_version = RELEASE[b.version]
    version_file: str | None = "2.3.0" if v23 else None
    if anomaly == "aborted-upgrade":
        init_version, version_file = "2.0.1", "2.3.0"
    init = b.p("/opt/cdd/agent/lib/cdd_agent/__init__.py")
    if anomaly == "no-marker":
        _write(init, '"""cdd agent."""\n')
    else:
        _write(init, f'"""cdd agent."""\n__version__ = "{init_version}"\n')
        if version_file:
            _write(b.p("/opt/cdd/agent/VERSION"), version_file + "\n")
    b.program("/opt/cdd/agent/lib/cdd_agent/agent.pyc")
    _write(
        b.p("/etc/systemd/system/cdd-agent.service"),
        "[Unit]\nDescription=CDD agent\n\n[Service]\n"
        "ExecStart=/usr/bin/python3.5 -m cdd_agent\nEnvironment=PYTHONPATH=/opt/cdd/agent/lib\n"
        "\n[Install]\nWantedBy=multi-user.target\n",
    )
    db_path = b.p("/var/lib/cdd/buffer.db")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    unsent: list[Reading] = []
    collected = 0
    con = sqlite3.connect(db_path)
    try:
        con.execute(
            "CREATE TABLE readings(ts REAL NOT NULL, tag TEXT NOT NULL, value REAL NOT NULL,"
            " collected INTEGER NOT NULL DEFAULT 0)"
        )
        times = b.times_ms(b.rng.randint(20, 40))
        for i, t_ms in enumerate(times):
            tag = b.rng.choice(b.tags)
            value = _value(b.rng, tag)
            # collected rows mostly older, but one unsent row older than collected ones
            done = i < len(times) // 2 and i != 1
            con.execute(
                "INSERT INTO readings(ts, tag, value, collected) VALUES (?, ?, ?, ?)",
                (t_ms / 1000, tag, value, int(done)),
            )
            if done:
                collected += 1
            else:
                unsent.append(Reading(tag, t_ms * 10**6, value))
        con.commit()
    finally:
        con.close()
    normal = len(b.tags) * 60 // normal_s
    alarm = len(b.tags) * 60 // alarm_s
    return sensors, normal, alarm, unsent, collected


def _v3(b: _Builder, anomaly: str | None) -> tuple[list[Sensor], int, int, list[Reading], int]:
    interval_ms = b.rng.choice((30000, 60000))
    sensors = [
        Sensor(tag, TAGS[tag][0], TAGS[tag][1], f"daq:{addr}")
        for tag, addr in zip(b.tags, b.channels, strict=True)
    ]
    units = [s.unit for s in sensors]
    if anomaly == "invalid-config":
        units[-1] = "bar"  # not the table's unit
    channels = [
        {"tag": s.tag, "unit": u, "addr": int(s.source[4:])}
        for s, u in zip(sensors, units, strict=True)
    ]
    config = {
        "device": {"id": b.appliance, "site": b.site},
        "interval_ms": interval_ms,
        "channels": channels,
    }
    if b.version in ("v3.1", "v3.2"):
        config["tls"] = {"ca": "/etc/cdd-edge/ca.pem", "verify": True}
        _write(b.p("/etc/cdd-edge/ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END"
               " CERTIFICATE-----\n")  # fmt: skip
    if b.version == "v3.2":
        env = [
            f"CDD_DEVICE_ID={b.appliance}",
            f"CDD_SITE={b.site}",
            f"CDD_INTERVAL_MS={interval_ms}",
            "CDD_TLS_CA=/etc/cdd-edge/ca.pem",
        ]
        _write(b.p("/etc/default/cdd-edge"), "\n".join(env) + "\n")
        csv = ["tag,unit,addr"] + [f"{c['tag']},{c['unit']},{c['addr']}" for c in channels]
        _write(b.p("/etc/cdd-edge/channels.csv"), "\n".join(csv) + "\n")
        if b.rng.random() < 0.5:  # a leftover v3.1 config, ignored by v3.2
            stale = dict(config, interval_ms=1000)
            _write(b.p("/etc/cdd-edge/config.json"), json.dumps(stale) + "\n")
    else:
        _write(b.p("/etc/cdd-edge/config.json"), json.dumps(config, indent=1) + "\n")
    if anomaly != "no-marker":
        _write(
            b.p("/usr/local/bin/cdd-edge"),
            '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "cdd-edge '
            + RELEASE[b.version]
            + '"; exit 0; fi\nexit 1\n',
            0o755,
        )
    b.program("/usr/local/lib/cdd-edge/cdd-edge.bin")
    _write(
        b.p("/etc/systemd/system/cdd-edge.service"),
        "[Unit]\nDescription=CDD edge 3\n\n[Service]\nEnvironmentFile=-/etc/default/cdd-edge\n"
        "ExecStart=/usr/local/bin/cdd-edge run\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    queue = b.p("/var/lib/cdd-edge/queue")
    queue.mkdir(parents=True, exist_ok=True)
    first = b.rng.randint(1, 40)
    segments = b.rng.randint(1, 3)
    unsent: list[Reading] = []
    times = b.times_ms(b.rng.randint(20, 40))
    per = -(-len(times) // segments)
    for k in range(segments):
        lines = []
        for t in times[k * per : (k + 1) * per]:
            tag = b.rng.choice(b.tags)
            value = _value(b.rng, tag)
            lines.append(json.dumps({"t": t, "tag": tag, "v": value}) + "\n")
            unsent.append(Reading(tag, t * 10**6, value))
        data = "".join(lines).encode()
        name = f"{first + k:06d}.jsonl"
        if b.version != "v3.0" and k < segments - 1:
            _write(queue / (name + ".gz"), _gz(data))
        else:
            _write(queue / name, data)
    per_min = len(b.tags) * 60000 // interval_ms
    return sensors, per_min, per_min, unsent, 0


def _v4(
    b: _Builder, anomaly: str | None
) -> tuple[list[Sensor], int, int, list[Reading], int, str | None]:
    release = RELEASE[b.version]
    normal = b.rng.choice((30, 60, 120))
    alarm = b.rng.choice((600, 1200, 3000))
    lines = [
        "[device]",
        f'id = "{b.appliance}"',
        f'site = "{b.site}"',
        "",
        "[sampling]",
        f"normal_per_min = {normal}",
        f"alarm_per_min = {alarm}",
    ]
    endpoint: str | None = None
    if b.version in ("v4.1", "v4.2"):
        endpoint = f"opc.tcp://10.{int(b.site[1:]) % 250}.0.5:4840"
        lines += ["", "[[opcua]]", f'endpoint = "{endpoint}"', 'security = "None"']
    if b.version == "v4.2":
        lines += ["", "[mqtt]", 'host = "mqtt.cdd.example"', "port = 8883"]
        lines.append(f'topic = "cdd/{b.site}/{b.appliance}/telemetry"')
    sensors: list[Sensor] = []
    for i, (tag, addr) in enumerate(zip(b.tags, b.channels, strict=True)):
        own_hot = b.rng.random() < 0.3
        source = f"modbus:{addr}"
        if endpoint is not None and (i == 0 or b.rng.random() < 0.3):
            source = f"opcua:ns=2;s=Rig.{tag}"
        sensors.append(
            Sensor(tag, TAGS[tag][0], own_hot,
                   source if source.startswith("opcua:") else f"daq:{addr}")
        )  # fmt: skip
        lines += ["", "[[sensor]]"]
        if not (anomaly == "invalid-config" and i == len(b.tags) - 1):
            lines.append(f'tag = "{tag}"')
        lines += [f'unit = "{TAGS[tag][0]}"', f'source = "{source}"']
        lines.append(f"hot = {str(own_hot).lower()}")
    _write(b.p("/etc/cdd-edge/edge.toml"), "\n".join(lines) + "\n")
    releases = ["4.0.1"] if b.version != "v4.0" and b.rng.random() < 0.5 else []
    for rel in [*releases, release]:
        b.program(f"/opt/cdd-edge/{rel}/bin/cdd-edge4.pyc")
        _write(b.p(f"/opt/cdd-edge/{rel}/pyvenv.cfg"), "home = /usr/bin\nversion = 3.8.10\n")
    if anomaly != "no-marker":
        os.symlink(release, b.p("/opt/cdd-edge/current"))
    _write(
        b.p("/etc/systemd/system/cdd-edge4.service"),
        "[Unit]\nDescription=CDD edge 4\n\n[Service]\n"
        "ExecStart=/opt/cdd-edge/current/bin/python -m cdd_edge4\n\n"
        "[Install]\nWantedBy=multi-user.target\n",
    )
    db_path = b.p("/var/lib/cdd-edge/queue.db")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    v42 = b.version == "v4.2"
    unsent: list[Reading] = []
    collected = 0
    con = sqlite3.connect(db_path)
    try:
        con.execute(
            "CREATE TABLE queue(id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL,"
            " tag TEXT NOT NULL, value REAL NOT NULL"
            + (", sent INTEGER NOT NULL DEFAULT 0)" if v42 else ")")
        )
        for i, t_ms in enumerate(b.times_ms(b.rng.randint(20, 40))):
            ts_ns = t_ms * 10**6 + b.rng.randrange(10**6)
            tag = b.rng.choice(b.tags)
            value = _value(b.rng, tag)
            sent = v42 and i % 3 == 0
            if v42:
                con.execute(
                    "INSERT INTO queue(ts_ns, tag, value, sent) VALUES (?, ?, ?, ?)",
                    (ts_ns, tag, value, int(sent)),
                )
            else:
                con.execute(
                    "INSERT INTO queue(ts_ns, tag, value) VALUES (?, ?, ?)", (ts_ns, tag, value)
                )
            if sent:
                collected += 1
            else:
                unsent.append(Reading(tag, ts_ns, value))
        con.commit()
    finally:
        con.close()
    return sensors, normal, alarm, unsent, collected, endpoint


def build_appliance(
    root: Path,
    appliance: str,
    version: str,
    *,
    seed: int,
    anomaly: str | None = None,
    now_s: int | None = None,
) -> Expected:
    """Lay out one legacy appliance under ``root``; return what convergence must produce."""
    if version not in VERSIONS:
        raise ValueError(f"unknown version {version!r}")
    if anomaly is not None and anomaly not in ANOMALIES:
        raise ValueError(f"unknown anomaly {anomaly!r}")
    if anomaly == "aborted-upgrade" and version not in ("v2.0", "v2.3"):
        raise ValueError("aborted-upgrade applies to v2.0 and v2.3 only")
    rng = random.Random(f"{appliance}/{version}/{seed}")
    for skeleton in ("etc", "opt", "run", "tmp", "usr/local/bin", "var/lib", "var/log"):
        (root / skeleton).mkdir(parents=True, exist_ok=True)
    b = _Builder(root, appliance, version, rng, int(time.time()) if now_s is None else now_s)
    endpoint: str | None = None
    family = version[1]
    if family == "1":
        sensors, normal, alarm, unsent, collected = _v1(b, anomaly)
        precision = "s"
    elif family == "2":
        sensors, normal, alarm, unsent, collected = _v2(b, anomaly)
        precision = "ms"
    elif family == "3":
        sensors, normal, alarm, unsent, collected = _v3(b, anomaly)
        precision = "ms"
    else:
        sensors, normal, alarm, unsent, collected, endpoint = _v4(b, anomaly)
        precision = "ns"
    (root / BACKUP_DIR).mkdir(parents=True, exist_ok=True)
    return Expected(
        appliance=appliance,
        site=b.site,
        version=version,
        anomaly=anomaly,
        converge=anomaly not in UNTOUCHED,
        inferred=anomaly == "no-marker",
        sensors=tuple(sensors),
        normal_per_min=normal,
        alarm_per_min=alarm,
        precision=precision,
        unsent=tuple(sorted(unsent, key=lambda r: (r.ts_ns, r.tag))),
        collected=collected,
        opcua_endpoint=endpoint,
    )


def tree_digest(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Every path under ``root`` -> its kind, mode and content hash (or link target)."""
    out: dict[str, str] = {}
    skip = tuple(root / e for e in exclude)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = f"link {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = f"dir {st.st_mode:o}"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = f"file {st.st_mode:o} {digest}"
    return out
