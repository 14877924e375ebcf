"""The cloud roles and ``ansible/cloud.yml``, run for real with ``ansible-playbook``.

One module-scoped lab, three playbook runs, all assertions sharing them:

1. **Converge** every group onto this machine (local connection) into a temporary root with
   ``cloud_service_manager: offline``: everything is rendered and our units are enabled with
   ``systemctl --root``; systemd starts nothing (there is none here). A real PostgreSQL from
   the harness is the registry server: the role creates and migrates the registry in it.
2. **Check mode**, at the same time as the converge (it writes nothing): packages, system
   accounts, the vendor apt repositories and an extra EMQX broker host, with the system
   Python (apt needs python3-apt), into an empty root. It must pass and write nothing.
3. **Second converge**, started as soon as the first is done: it must report ``changed=0``.

While the second run goes, the services are started as plain processes from what the
converge rendered, exactly as their units say (``ExecStart``, ``EnvironmentFile``,
``WorkingDirectory``): Mosquitto, QuestDB, ingest worker 1, the API and the alert evaluator.
Then the outcomes: the broker refuses a wrong password, the ingest worker is ready and stores
a Sparkplug node's data in the converged QuestDB, the API answers ``/health`` and ``/ready``
(registry and QuestDB reachable with the rendered secrets), the alert evaluator subscribes,
catches up from QuestDB and opens an alert for a node crossing a rule's threshold, and the
report service, run once, renders the previous month of every site of the registry.
ansible-lint of the playbook and roles is not repeated here: ``./derrick test`` runs it
before pytest (docs/cloud.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import json
import os
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pyarrow.parquet as pq
import pytest

from api import registry
from api.__main__ import previous_month
from cold.__main__ import _parser as cold_parser
from core import audit
from core.sparkplug import DataType
from core.sparkplug.session import EdgeNodeSession, MetricDef
from harness import Postgres, locate
from harness.ports import allocate_port, is_listening
from harness.process import ManagedProcess
from harness.tls import make_scratch_pki
from ingest.compiled import COMPILED_MODULES, default_directory

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOK = ANSIBLE_DIR / "cloud.yml"
GROUPS = (
    "brokers", "questdb", "postgres", "ingest", "api", "alerts", "cold", "grafana", "prometheus"
)  # fmt: skip
RECAP = re.compile(
    r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)
SITE, NODE, DEVICE = "s901", "s901-a001", "daq"
# The node the alert test publishes (above the rule's threshold), apart from the ingest test's.
ALERTING_NODE, THRESHOLD = "s901-a002", 45.0


class _PlaybookRun:
    """One ``ansible-playbook`` run of cloud.yml in the background; output in ``log``."""

    def __init__(self, inventory: Path, name: str, *extra: str) -> None:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        }
        env.pop("ANSIBLE_STDOUT_CALLBACK", None)
        self.log = inventory.with_name(f"{name}.log")
        command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory)]
        with self.log.open("w") as sink:
            self._proc = subprocess.Popen(
                [*command, *extra, str(PLAYBOOK)],
                cwd=ANSIBLE_DIR,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self._done: subprocess.CompletedProcess[str] | None = None

    def result(self, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        if self._done is None:
            try:
                self._proc.wait(timeout=timeout)
            finally:
                if self._proc.poll() is None:
                    self._proc.kill()
                    self._proc.wait()
            self._done = subprocess.CompletedProcess(
                self._proc.args, self._proc.returncode, self.log.read_text(), ""
            )
        return self._done


@dataclass(frozen=True)
class Lab:
    root: Path
    inventory: Path
    secrets: dict[str, str]
    ports: dict[str, int]
    edge_password: str
    registry_database: str
    registry_dsn: str
    postgres: Postgres
    first: subprocess.CompletedProcess[str]
    second: _PlaybookRun
    check: _PlaybookRun
    check_root: Path
    emqx_cookie: str


def _write_inventory(
    path: Path,
    common: dict[str, object],
    *,
    brokers: dict[str, dict[str, object]] | None = None,
) -> None:
    """Host ``lab`` in every group; ``brokers`` adds hosts to the brokers group only."""
    children: dict[str, object] = {group: {"hosts": {"lab": {}}} for group in GROUPS}
    children["brokers"] = {"hosts": {"lab": {}, **(brokers or {})}}
    inventory = {"all": {"vars": common, "children": children}}
    path.write_text(json.dumps(inventory, indent=2))  # JSON is YAML


def _recap(run: subprocess.CompletedProcess[str]) -> dict[str, tuple[int, int, int, int]]:
    found = {m[0]: (int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in RECAP.findall(run.stdout)}
    assert found, f"no PLAY RECAP in:\n{run.stdout[-4000:]}"
    return found


def _assert_ok(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, f"ansible-playbook failed:\n{run.stdout[-6000:]}"
    for host, (_, _, unreachable, failed) in _recap(run).items():
        assert (unreachable, failed) == (0, 0), host


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, _postgres_server: Postgres) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("cloud-lab")
    root, check_root = base / "root", base / "check-root"
    root.mkdir()
    check_root.mkdir()
    pg = _postgres_server
    if not pg.running:
        pg.restart()
    ports = {
        name: allocate_port()
        for name in (
            "mqtt",
            "mqtt_tls",
            "qdb_http",
            "qdb_http_min",
            "qdb_pg",
            "qdb_ilp",
            "api",
            "api_metrics",
            "ingest_1",
            "prometheus",
        )
    }
    pki = make_scratch_pki(base / "pki")
    mqtt_password, edge_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    alerts_password = secrets.token_urlsafe(18)
    passwd = base / "passwd"
    for n, (user, password) in enumerate(
        (
            ("derrick-ingest", mqtt_password),
            ("lab-edge", edge_password),
            ("derrick-alerts", alerts_password),
        )
    ):
        create = ["-c"] if n == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(passwd), user, password], check=True)
    acl = base / "acl"
    acl.write_text(
        "user derrick-ingest\ntopic readwrite spBv1.0/#\n\n"
        f"user lab-edge\ntopic readwrite spBv1.0/{SITE}/#\n\n"
        # reads everything, publishes rebirth requests only
        "user derrick-alerts\ntopic read spBv1.0/#\ntopic write spBv1.0/+/NCMD/#\n"
    )
    database = f"derrick_cloud_{uuid.uuid4().hex[:8]}"
    lab_secrets = {
        "registry": secrets.token_urlsafe(18),
        "mqtt": mqtt_password,
        "grafana": secrets.token_urlsafe(12),
        "qdb_pg": secrets.token_urlsafe(12),
        "alerts_mqtt": alerts_password,
        # the notifier's SMTP login: rendered, never used (no e-mail target in the lab)
        "smtp": secrets.token_urlsafe(12),
        "emqx_auth": secrets.token_urlsafe(18),
        # the cold job's failure webhook: rendered, never called (nothing fails here)
        "cold_webhook": f"https://hooks.lab.example/{secrets.token_urlsafe(12)}",
    }
    qdb_dsn = (
        f"host=127.0.0.1 port={ports['qdb_pg']} dbname=qdb user=admin"
        f" password={lab_secrets['qdb_pg']}"
    )
    registry_dsn = (
        f"host={pg.host} port={pg.port} dbname={database} user={database}"
        f" password={lab_secrets['registry']}"
    )
    common: dict[str, object] = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "cloud_root": str(root),
        "cloud_service_manager": "offline",
        "cloud_manage_packages": False,
        "cloud_manage_accounts": False,
        "cloud_python": sys.executable,
        "cloud_app_dir": str(REPO),
        "cloud_ingest_compiled_dir": str(default_directory()),
        "cloud_broker_mosquitto_user": getpass.getuser(),
        "cloud_broker_mosquitto_bin": str(locate.mosquitto_binary()),
        "cloud_broker_mqtt_address": "127.0.0.1",
        "cloud_broker_mqtt_port": ports["mqtt"],
        # the TLS listener, with a CA made here
        "cloud_broker_tls_port": ports["mqtt_tls"],
        "cloud_broker_tls_cert_src": str(pki.server.cert),
        "cloud_broker_tls_key_src": str(pki.server.key),
        "cloud_broker_tls_ca_src": str(pki.ca),
        "cloud_broker_password_file_src": str(passwd),
        "cloud_broker_acl_file_src": str(acl),
        "cloud_questdb_jar_src": str(locate.questdb_jar()),
        "cloud_questdb_java_bin": str(locate.java_binary()),
        "cloud_questdb_heap": "512m",
        "cloud_questdb_bind_address": "127.0.0.1",
        "cloud_questdb_http_port": ports["qdb_http"],
        "cloud_questdb_http_min_port": ports["qdb_http_min"],
        "cloud_questdb_pg_port": ports["qdb_pg"],
        "cloud_questdb_ilp_tcp_port": ports["qdb_ilp"],
        "cloud_questdb_secrets": {"QDB_PG_PASSWORD": lab_secrets["qdb_pg"]},
        "cloud_postgres_psql": str(Path(locate.pg_bindir()) / "psql"),
        "cloud_postgres_admin_dsn": pg.dsn_for("postgres"),
        "cloud_postgres_admin_become_user": "",
        "cloud_postgres_registry_host": pg.host,
        "cloud_postgres_registry_port": pg.port,
        "cloud_postgres_registry_database": database,
        "cloud_postgres_registry_user": database,
        "cloud_postgres_registry_password": lab_secrets["registry"],
        "cloud_postgres_emqx_auth_user": f"emqx_{database}",
        "cloud_postgres_emqx_auth_password": lab_secrets["emqx_auth"],
        "cloud_ingest_workers": 2,
        "cloud_ingest_shared_group": "derrick-ingest",
        "cloud_ingest_mqtt_port": ports["mqtt"],
        "cloud_ingest_mqtt_password": mqtt_password,
        "cloud_ingest_questdb_ilp_conf": f"http::addr=127.0.0.1:{ports['qdb_http']};",
        "cloud_ingest_questdb_pg_dsn": qdb_dsn,
        # Worker n serves its metrics on base + n: worker 1 (the one started) gets a free port.
        "cloud_ingest_metrics_port_base": ports["ingest_1"] - 1,
        "cloud_api_port": ports["api"],
        "cloud_api_metrics_port": ports["api_metrics"],
        "cloud_prometheus_bin": str(locate.prometheus_binary()),
        "cloud_prometheus_promtool": str(locate.promtool_binary()),
        "cloud_prometheus_listen": f"127.0.0.1:{ports['prometheus']}",
        "cloud_prometheus_data_dir": "/var/lib/derrick-prometheus",
        "cloud_prometheus_scrape_interval": "1s",
        "cloud_prometheus_scrape": {
            "derrick-ingest": [f"127.0.0.1:{ports['ingest_1']}"],
            "derrick-api": [f"127.0.0.1:{ports['api_metrics']}"],
            "questdb": [f"127.0.0.1:{ports['qdb_http_min']}"],
        },
        "cloud_api_registry_dsn": registry_dsn,
        "cloud_api_questdb_dsn": qdb_dsn,
        "cloud_alerts_mqtt_port": ports["mqtt"],
        "cloud_alerts_mqtt_password": alerts_password,
        "cloud_alerts_registry_dsn": registry_dsn,
        "cloud_alerts_questdb_dsn": qdb_dsn,
        "cloud_alerts_smtp_host": "127.0.0.1",
        "cloud_alerts_smtp_sender": "alerts@lab.example",
        "cloud_alerts_smtp_username": "derrick-alerts",
        "cloud_alerts_smtp_password": lab_secrets["smtp"],
        "cloud_cold_questdb_pg_dsn": qdb_dsn,
        "cloud_cold_questdb_http_url": f"http://127.0.0.1:{ports['qdb_http']}",
        "cloud_cold_questdb_ilp_conf": f"http::addr=127.0.0.1:{ports['qdb_http']};",
        "cloud_cold_alert_webhook": lab_secrets["cold_webhook"],
        "cloud_grafana_questdb_password": lab_secrets["grafana"],
    }
    inventory = base / "inventory.yml"
    _write_inventory(inventory, common)
    check_vars = {
        **common,
        "ansible_python_interpreter": "/usr/bin/python3",
        "cloud_root": str(check_root),
        "cloud_manage_packages": True,
        "cloud_manage_accounts": True,
        "cloud_broker_mosquitto_user": "mosquitto",
    }
    cookie = secrets.token_hex(16)
    certs = base / "emqx-certs"  # stand-ins: check mode reads them, EMQX never does here
    certs.mkdir()
    for name in ("ca.pem", "server.pem", "server.key", "site-ca.pem", "pg-ca.pem"):
        (certs / name).write_text(f"stand-in {name}\n")
    emqx = {
        "cloud_broker_kind": "emqx",
        "cloud_broker_emqx_secrets": {"EMQX_NODE_COOKIE": cookie},
        "cloud_broker_emqx_certs": {p.name: str(p) for p in sorted(certs.iterdir())},
    }
    check_inventory = base / "check-inventory.yml"
    _write_inventory(check_inventory, check_vars, brokers={"emqx1": emqx})
    try:
        # The check-mode run writes nothing and touches no server: it runs alongside.
        check = _PlaybookRun(check_inventory, "check", "--check")
        first = _PlaybookRun(inventory, "converge-1").result()
        _assert_ok(first)
        second = _PlaybookRun(inventory, "converge-2")
        yield Lab(
            root,
            inventory,
            lab_secrets,
            ports,
            edge_password,
            database,
            registry_dsn,
            pg,
            first,
            second,
            check,
            check_root,
            cookie,
        )
        second.result()
        check.result()
    finally:
        with psycopg.connect(pg.dsn_for("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{database}"')
            admin.execute(f'DROP ROLE IF EXISTS "emqx_{database}"')


# -- starting what was rendered, as systemd would ---------------------------------------------


def _environment_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


@dataclass(frozen=True)
class _Command:
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None


def _unit_command(lab: Lab, unit: str, instance: str = "") -> _Command:
    """What systemd would run for ``unit`` of the lab root: its ExecStart (with ``%i`` set to
    ``instance``), Environment, EnvironmentFile and WorkingDirectory."""
    text = (lab.root / "etc/systemd/system" / unit).read_text().replace("%i", instance)
    argv: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDB_", "DERRICK_"))}
    cwd = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "EnvironmentFile":
            env.update(_environment_file(Path(value)))
        elif key == "Environment":
            env.update(item.split("=", 1) for item in shlex.split(value))
        elif key == "WorkingDirectory":
            cwd = Path(value)
    assert argv, f"{unit} has no ExecStart"
    return _Command(argv, env, cwd)


def _start_unit(lab: Lab, unit: str, name: str, instance: str = "") -> ManagedProcess:
    """Start ``unit`` of the lab root as a plain process, as systemd would."""
    command = _unit_command(lab, unit, instance)
    process = ManagedProcess(
        name, command.argv, log_path=lab.root / f"{name}.out", env=command.env, cwd=command.cwd
    )
    process.start()
    return process


def _wait(process: ManagedProcess, what: str, ready: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        log = process.log_path.read_text()[-3000:] if process.log_path.exists() else ""
        assert process.running, f"{process.name} exited ({process.returncode}):\n{log}"
        assert time.monotonic() < deadline, f"{process.name}: {what} not within {limit} s\n{log}"
        time.sleep(0.2)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _questdb_answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


@dataclass(frozen=True)
class Services:
    mosquitto: ManagedProcess
    alerts: ManagedProcess
    questdb_dsn: str


def _seed_registry(dsn: str) -> None:
    """Site s901 of a tenant, a threshold rule on its ROP, and a checkpoint of the evaluator
    ten minutes ago (so that it catches up from QuestDB when it starts), as an operator and a
    customer would have left them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.create_tenant(conn, "lab", "Lab customer")
        registry.create_site(conn, SITE, "lab", "Lab pad")
        conn.execute(
            "INSERT INTO alert_rules (tenant_id, site_id, metric, name, severity, condition,"
            " created_by) VALUES ('lab', %s, 'ROP', 'ROP high', 'warning', %s, 'lab')",
            (SITE, json.dumps({"kind": "threshold", "op": "above", "value": THRESHOLD})),
        )
        conn.execute(
            "INSERT INTO alert_evaluator_checkpoints (evaluator, sample_ts)"
            " VALUES ('alerts-1', now() - interval '10 minutes')"
        )


def _logged(process: ManagedProcess, *lines: str) -> bool:
    text = process.log_path.read_text() if process.log_path.exists() else ""
    return all(line in text for line in lines)


@pytest.fixture(scope="module")
def services(lab: Lab) -> Iterator[Services]:
    ports = lab.ports
    dsn = (
        f"host=127.0.0.1 port={ports['qdb_pg']} dbname=qdb user=admin"
        f" password={lab.secrets['qdb_pg']}"
    )
    started: list[ManagedProcess] = []
    try:
        mosquitto = _start_unit(lab, "mosquitto.service", "mosquitto")
        started.append(mosquitto)
        questdb = _start_unit(lab, "questdb.service", "questdb")
        started.append(questdb)
        _wait(mosquitto, "MQTT listener", lambda: is_listening(ports["mqtt"]), 30)
        _wait(questdb, "PGWire with the rendered password", lambda: _questdb_answers(dsn), 180)
        ingest = _start_unit(lab, "derrick-ingest@.service", "ingest-1", instance="1")
        started.append(ingest)
        api = _start_unit(lab, "derrick-api.service", "api")
        started.append(api)
        ingest_ready = f"http://127.0.0.1:{ports['ingest_1']}/ready"
        _wait(ingest, "/ready 200", lambda: _http_status(ingest_ready) == 200, 120)
        # after the ingest created the QuestDB tables the evaluator's catch-up reads
        _seed_registry(lab.registry_dsn)
        alerts = _start_unit(lab, "derrick-alerts.service", "alerts")
        started.append(alerts)
        api_health = f"http://127.0.0.1:{ports['api']}/health"
        _wait(api, "/health 200", lambda: _http_status(api_health) == 200, 120)
        subscribed = f"alert evaluator subscribed at 127.0.0.1:{ports['mqtt']}"
        _wait(alerts, subscribed, lambda: _logged(alerts, subscribed, "caught up:"), 120)
        yield Services(mosquitto, alerts, dsn)
    finally:
        for process in reversed(started):
            process.stop(timeout=30)


# -- what the converge rendered ----------------------------------------------------------------


def test_secret_files_are_private(lab: Lab) -> None:
    for relative in (
        "etc/derrick/ingest.env",
        "etc/derrick/ingest-mqtt.password",
        "etc/derrick/api.env",
        "etc/derrick/alerts.env",
        "etc/derrick/report.env",
        "etc/derrick/cold.env",
        "etc/derrick/alert.env",
        "etc/questdb/questdb.env",
        "etc/grafana/derrick.env",
        "etc/mosquitto/derrick/passwd",
    ):
        path = lab.root / relative
        assert path.stat().st_mode & 0o777 == 0o600, relative
    assert (lab.root / "etc/derrick/ingest-mqtt.password").read_text() == lab.secrets["mqtt"]
    alerts_env = _environment_file(lab.root / "etc/derrick/alerts.env")
    assert alerts_env["DERRICK_ALERTS_MQTT_PASSWORD"] == lab.secrets["alerts_mqtt"]
    assert alerts_env["DERRICK_ALERTS_SMTP_PASSWORD"] == lab.secrets["smtp"]
    # the reports get the two connection strings, not the evaluator's passwords
    report_env = _environment_file(lab.root / "etc/derrick/report.env")
    assert sorted(report_env) == ["DERRICK_PG_DSN", "DERRICK_QUESTDB_PG"]
    cold_env = _environment_file(lab.root / "etc/derrick/cold.env")
    assert sorted(cold_env) == ["DERRICK_QUESTDB_HTTP", "DERRICK_QUESTDB_ILP", "DERRICK_QUESTDB_PG"]
    alert_env = _environment_file(lab.root / "etc/derrick/alert.env")
    assert alert_env == {"DERRICK_ALERT_WEBHOOK": lab.secrets["cold_webhook"]}
    for relative in (
        "etc/derrick/ingest-1.toml",
        "etc/derrick/api.toml",
        "etc/derrick/alerts.toml",
        "etc/derrick/cold.toml",
    ):
        text = (lab.root / relative).read_text()
        assert not any(value in text for value in lab.secrets.values()), relative


def test_rendered_ingest_configs_pass_validation(lab: Lab) -> None:
    for worker in (1, 2):
        config = lab.root / f"etc/derrick/ingest-{worker}.toml"
        text = config.read_text()
        assert text.startswith("# Ansible managed")
        assert f'worker = "w{worker}"' in text
        assert 'shared_group = "derrick-ingest"' in text
        assert f"port = {lab.ports['ingest_1'] - 1 + worker}" in text
    # The validation the role runs before installing a file refuses a broken one, naming the
    # key (the rendered files passed it: the converge would have failed otherwise).
    broken = lab.root / "broken.toml"
    broken.write_text(
        (lab.root / "etc/derrick/ingest-1.toml").read_text().replace("worker =", "workers =")
    )
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "check", "--config", str(broken)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "workers" in result.stderr


def test_questdb_gets_the_settings_ingest_needs(lab: Lab) -> None:
    conf = (lab.root / "var/lib/questdb/conf/server.conf").read_text().splitlines()
    assert "cairo.commit.mode=sync" in conf
    assert f"pg.net.bind.to=127.0.0.1:{lab.ports['qdb_pg']}" in conf
    unit = (lab.root / "etc/systemd/system/questdb.service").read_text()
    assert "LimitNOFILE=1048576" in unit
    assert "-Xms512m -Xmx512m" in unit
    assert "vm.max_map_count = 1048576" in (lab.root / "etc/sysctl.d/60-questdb.conf").read_text()
    assert (
        lab.root / "opt/questdb/questdb-9.3.4.jar"
    ).stat().st_size == locate.questdb_jar().stat().st_size
    assert lab.secrets["qdb_pg"] not in "\n".join(conf)


def test_grafana_gets_the_provisioning_files(lab: Lab) -> None:
    grafana = REPO / "api/grafana"
    pairs = {
        "provisioning/datasources/questdb.yaml": "datasources/derrick-questdb.yaml",
        "provisioning/dashboards/platform.yaml": "dashboards/derrick-platform.yaml",
        "platform/platform-health.json": "derrick-platform/platform-health.json",
        "dashboards/fleet-health.json": "derrick/fleet-health.json",
    }
    for src, dest in pairs.items():
        where = (
            "etc/grafana/provisioning" if dest.endswith(".yaml") else "var/lib/grafana/dashboards"
        )
        assert (lab.root / where / dest).read_bytes() == (grafana / src).read_bytes(), dest


def test_units_are_enabled_and_verify(lab: Lab, tmp_path: Path) -> None:
    wants = lab.root / "etc/systemd/system/multi-user.target.wants"
    enabled = sorted(p.name for p in wants.iterdir())
    assert enabled == [
        "derrick-alerts.service",
        "derrick-api.service",
        "derrick-ingest@1.service",
        "derrick-ingest@2.service",
        "derrick-prometheus.service",
        "mosquitto.service",
        "questdb.service",
    ]
    timers = lab.root / "etc/systemd/system/timers.target.wants"
    assert sorted(p.name for p in timers.iterdir()) == [
        "derrick-catalogue-sync.timer",
        "derrick-cold-freshness.timer",
        "derrick-cold-nightly.timer",
        "derrick-report.timer",
    ]
    units = lab.root / "etc/systemd/system"
    verified = (
        "mosquitto.service", "questdb.service", "derrick-api.service", "derrick-prometheus.service"
    )  # fmt: skip
    # the ingest template, as the instance systemd would load (%i = 1)
    instance = tmp_path / "derrick-ingest@1.service"
    instance.write_text((units / "derrick-ingest@.service").read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / unit) for unit in verified), str(instance)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The alerts role's units, as tests/fleet/test_fleet_services.py checks its own: a
    # warning is a failure too.
    ours = ("derrick-alerts.service", "derrick-report.service", "derrick-report.timer",
            "derrick-catalogue-sync.service", "derrick-catalogue-sync.timer",
            "derrick-cold-nightly.service", "derrick-cold-nightly.timer",
            "derrick-cold-freshness.service", "derrick-cold-freshness.timer",
            "derrick-cold-alert@.service")  # fmt: skip
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / unit) for unit in ours)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr.strip()) == (0, ""), result.stderr
    timer = (units / "derrick-report.timer").read_text().splitlines()
    assert {"OnCalendar=*-*-01 06:00:00 UTC", "Persistent=true"} <= set(timer)
    report = (units / "derrick-report.service").read_text().splitlines()
    assert "Type=oneshot" in report
    sync_timer = (units / "derrick-catalogue-sync.timer").read_text().splitlines()
    assert "OnUnitInactiveSec=5min" in sync_timer
    nightly = (units / "derrick-cold-nightly.timer").read_text().splitlines()
    assert {"OnCalendar=*-*-* 01:30:00 UTC", "Persistent=true"} <= set(nightly)
    for unit in ("derrick-cold-nightly.service", "derrick-cold-freshness.service"):
        lines = (units / unit).read_text().splitlines()
        assert {"Type=oneshot", "OnFailure=derrick-cold-alert@%n.service"} <= set(lines), unit
        # the command line is one the job's CLI accepts (it exits on a bad one)
        argv = _unit_command(lab, unit).argv
        cold_parser().parse_args(argv[argv.index("cold") + 1 :])


def test_registry_is_created_and_migrated(lab: Lab) -> None:
    pg = lab.postgres
    dsn = (
        f"host={pg.host} port={pg.port} dbname={lab.registry_database}"
        f" user={lab.registry_database} password={lab.secrets['registry']}"
    )
    with psycopg.connect(dsn) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert owner == (lab.registry_database,)
    assert {"tenants", "sites", "appliances"} <= tables


def test_emqx_role_reads_the_broker_views_and_nothing_else(lab: Lab) -> None:
    """The role broker/emqx/emqx.conf logs in as: its two queries work, the tables behind
    them (salted hashes, API keys) are refused."""
    pg = lab.postgres
    dsn = (
        f"host={pg.host} port={pg.port} dbname={lab.registry_database}"
        f" user=emqx_{lab.registry_database} password={lab.secrets['emqx_auth']}"
    )
    conf = (REPO / "broker" / "emqx" / "emqx.conf").read_text()
    queries = re.findall(r'query = "(SELECT [^"]+)"', conf)
    assert len(queries) == 2, queries
    with psycopg.connect(dsn, autocommit=True) as conn:
        for query in queries:
            # EMQX's ${username} placeholder, bound here as psycopg's
            assert conn.execute(query.replace("${username}", "%s"), ("nobody",)).fetchall() == []
        for table in ("mqtt_credentials", "mqtt_service_accounts", "api_keys", "tenants"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")


# -- the services, started from the rendered files ---------------------------------------------


async def _connect(port: int, user: str, password: str) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"cloud-roles-{user}", username=user, password=password
    ) as client:
        await client.publish(f"spBv1.0/{SITE}/NDATA/probe", b"x")


def test_broker_tls_listener_with_the_deployed_certificate(lab: Lab, services: Services) -> None:
    """The role's TLS listener serves the certificate it installed: a client trusting the
    deployment's CA connects and publishes with a node's password; one that does not
    trust it fails the handshake; the key is private to the broker."""
    port = lab.ports["mqtt_tls"]
    _wait(services.mosquitto, "TLS listener", lambda: is_listening(port), 30)
    trusted = ssl.create_default_context(cafile=str(lab.root.parent / "pki" / "ca.pem"))

    async def publish() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="cloud-roles-tls", username="lab-edge",
            password=lab.edge_password, tls_context=trusted,
        ) as client:  # fmt: skip
            await client.publish(f"spBv1.0/{SITE}/NDATA/tls-probe", b"x", qos=1)

    asyncio.run(publish())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    key = lab.root / "etc/mosquitto/derrick/server.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_broker_refuses_a_wrong_password(lab: Lab, services: Services) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        asyncio.run(_connect(lab.ports["mqtt"], "lab-edge", "wrong"))
    log = (lab.root / "var/log/mosquitto/mosquitto.log").read_text()
    assert "derrick-ingest" in log  # the worker's connection, in the rendered log file


async def _publish_node(
    port: int, password: str, node: str = NODE, base: float = 40.0
) -> list[tuple[int, float]]:
    now = time.time_ns() // 1_000_000
    session = EdgeNodeSession(
        group_id=SITE,
        edge_node_id=node,
        metrics=[MetricDef(1, DEVICE, "ROP", DataType.Double, "ft/h", True)],
        clock=lambda: time.time_ns() // 1_000_000,
    )
    samples = [(now - 3000 + k * 1000, base + k * 0.25) for k in range(3)]
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=node, username="lab-edge", password=password
    ) as client:
        session.will(0)
        for out in (session.nbirth({}), session.dbirth(DEVICE, {})):
            await client.publish(str(out.topic), out.payload, qos=1)
        out = session.data(DEVICE, [(1, ts, v, 0) for ts, v in samples], historical=False)
        await client.publish(str(out.topic), out.payload, qos=1)
    return samples


def test_ingest_stores_a_node_in_the_converged_questdb(lab: Lab, services: Services) -> None:
    samples = asyncio.run(_publish_node(lab.ports["mqtt"], lab.edge_password))
    query = "SELECT value FROM telemetry_raw WHERE node = %s AND metric = 'ROP' ORDER BY ts"
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(services.questdb_dsn, autocommit=True) as conn:
                values = [r[0] for r in conn.execute(query, (NODE,)).fetchall()]
        except psycopg.Error:
            values = []
        if values == [v for _, v in samples] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert values == [v for _, v in samples]
    # and the worker archived what it received, raw, in its audit chain (the cold path's
    # source: docs/cold-path.md), under the directory the role made
    chain = lab.root / "var/lib/derrick/audit/derrick-w1"
    wanted = {f"spBv1.0/{SITE}/NBIRTH/{NODE}", f"spBv1.0/{SITE}/DDATA/{NODE}/{DEVICE}"}
    deadline = time.monotonic() + 10  # committed once per flush cycle
    while True:
        report = audit.verify_chain(chain) if chain.is_dir() else None
        topics = set()
        if report is not None and report.ok:
            topics = {r.topic for _, records in audit.iter_records(chain) for r in records}
        if wanted <= topics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert report is not None and report.ok, report
    assert wanted <= topics, topics
    # the unit pointed the worker at the compiled build (cloud_ingest_compiled_dir): it loaded it
    url = f"http://127.0.0.1:{lab.ports['ingest_1']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert f"derrick_ingest_compiled_modules {float(len(COMPILED_MODULES))}" in text


def test_catalogue_sync_service_registers_the_births_ingest_saw(
    lab: Lab, services: Services
) -> None:
    """derrick-catalogue-sync.service's ExecStart, run once as its timer would: a node that
    was born through the converged broker and ingest is then in the registry, under its site,
    with its device and metric as the birth declared them."""
    node = "s901-a003"
    asyncio.run(_publish_node(lab.ports["mqtt"], lab.edge_password, node=node))
    query = "SELECT count() FROM metric_catalogue WHERE node = %s AND metric = 'ROP'"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(psycopg.Error), psycopg.connect(services.questdb_dsn) as conn:
            if conn.execute(query, (node,)).fetchone() != (0,):
                break
        assert time.monotonic() < deadline, "the birth never reached metric_catalogue"
        time.sleep(0.5)
    command = _unit_command(lab, "derrick-catalogue-sync.service")
    done = subprocess.run(
        command.argv, env=command.env, cwd=command.cwd, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    with psycopg.connect(lab.registry_dsn) as conn:
        appliance = conn.execute(
            "SELECT site_id, state FROM appliances WHERE id = %s", (node,)
        ).fetchone()
        metrics = conn.execute(
            "SELECT device_id, name, datatype, unit, hot FROM metrics WHERE appliance_id = %s"
            " AND device_id = %s",
            (node, DEVICE),
        ).fetchall()
    assert appliance == (SITE, "discovered")
    assert metrics == [(DEVICE, "ROP", "Double", "ft/h", True)]  # the DBIRTH's one metric


def test_nightly_cold_job_runs_from_its_unit(lab: Lab, services: Services) -> None:
    """derrick-cold-nightly.service's ExecStart, run as its timer would (for today, where the
    lab's data is, instead of yesterday): it verifies the ingest workers' audit chains the
    role pointed it at, archives the day in Parquet where the role said, and records its
    success; then derrick-cold-freshness.service passes."""
    node = "s901-a004"
    samples = asyncio.run(_publish_node(lab.ports["mqtt"], lab.edge_password, node=node))
    query = "SELECT count() FROM telemetry_raw WHERE node = %s"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(psycopg.Error), psycopg.connect(services.questdb_dsn) as conn:
            if conn.execute(query, (node,)).fetchone() == (len(samples),):
                break
        assert time.monotonic() < deadline, "the node's samples never reached telemetry_raw"
        time.sleep(0.5)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    command = _unit_command(lab, "derrick-cold-nightly.service")
    done = subprocess.run(
        [*command.argv, "--day", today], env=command.env, cwd=command.cwd,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    logged = [json.loads(line) for line in done.stderr.splitlines()]  # --log-format json
    assert any("retention: done" in entry["message"] for entry in logged), done.stderr[-2000:]
    state = lab.root / "var/lib/derrick/cold-state"
    assert state.stat().st_mode & 0o777 == 0o750
    assert json.loads((state / "last-success").read_text())["day"] == today
    # the audit step walked ingest worker 1's chain where the role pointed it (one open
    # segment here: no sealed head to anchor yet, docs/cold-path.md)
    run = json.loads((state / "nightly" / f"{today}.json").read_text())
    assert re.search(r"derrick-w1: [1-9]\d* records", run["done"]["audit"]["detail"]), run
    assert (state / "audit-anchors.json").exists()
    # the day of the lab's site, archived where the role said: every row QuestDB holds
    day = lab.root / f"var/lib/derrick/parquet/telemetry_raw/site={SITE}/day={today}"
    manifest = json.loads((day / "_manifest.json").read_text())
    start = dt.datetime.combine(dt.date.fromisoformat(today), dt.time(), dt.UTC)
    with psycopg.connect(services.questdb_dsn) as conn:
        stored = conn.execute(
            "SELECT count() FROM telemetry_raw WHERE site = %s AND ts >= %s AND ts < %s",
            (SITE, start, start + dt.timedelta(days=1)),
        ).fetchone()
    assert stored is not None and manifest["rows"] == stored[0] >= len(samples)
    assert pq.read_table(day / "part-0.parquet").num_rows == manifest["rows"]
    freshness = _unit_command(lab, "derrick-cold-freshness.service")
    done = subprocess.run(
        freshness.argv, env=freshness.env, cwd=freshness.cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_api_is_healthy_and_ready(lab: Lab, services: Services) -> None:
    api = f"http://127.0.0.1:{lab.ports['api']}"
    assert _http_status(f"{api}/health") == 200
    # ready = the registry and QuestDB answer with the connection strings from api.env
    assert _http_status(f"{api}/ready") == 200
    # latency per route on the metrics listener the role rendered, not on the API's port
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.ports['api_metrics']}/metrics") as r:
        exposition = r.read().decode()
    assert 'path="/ready"' in exposition, exposition[:2000]
    assert _http_status(f"{api}/metrics") == 404


def _prometheus_api(lab: Lab, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{lab.ports['prometheus']}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_prometheus_scrapes_every_service_and_loads_the_rules(lab: Lab, services: Services) -> None:
    """derrick-prometheus.service as rendered: every scrape job's target is up (the ingest
    worker, the API's metrics listener, QuestDB) and the Platform Health rules are loaded and
    evaluate without error."""
    prometheus = _start_unit(lab, "derrick-prometheus.service", "prometheus")
    try:
        ready = f"http://127.0.0.1:{lab.ports['prometheus']}/-/ready"
        _wait(prometheus, "/-/ready 200", lambda: _http_status(ready) == 200, 60)

        def targets() -> dict[str, str]:
            active = _prometheus_api(lab, "/api/v1/targets")["data"]["activeTargets"]
            return {t["labels"]["job"]: t["health"] for t in active}

        want = {"derrick-ingest": "up", "derrick-api": "up", "questdb": "up"}
        _wait(prometheus, f"targets {want}", lambda: targets() == want, 60)

        def rules() -> list[dict[str, Any]]:
            groups = _prometheus_api(lab, "/api/v1/rules")["data"]["groups"]
            return [r for g in groups if g["name"] == "derrick-platform-health" for r in g["rules"]]

        # evaluated at least once (a rule not yet evaluated reports health "unknown")
        _wait(prometheus, "rules evaluated", lambda: all(r["health"] == "ok" for r in rules()), 60)
        assert len(rules()) == 9
        # the worker is an online Primary Host: its offline alert is not pending or firing
        offline = next(r for r in rules() if r["name"] == "IngestWorkerOffline")
        assert offline["state"] == "inactive", offline
    finally:
        prometheus.stop()


def test_services_log_one_json_object_a_line(lab: Lab, services: Services) -> None:
    """The units run every service with --log-format json (for journald and a log shipper)."""
    for name in ("api", "ingest-1", "alerts"):
        text = (lab.root / f"{name}.out").read_text()
        # every line but the harness's own start marker
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("==== ")]
        assert lines, name
        records = [json.loads(line) for line in lines]
        assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records), records[:3]


def test_alert_evaluator_opens_an_alert_from_the_broker(lab: Lab, services: Services) -> None:
    """The evaluator started from derrick-alerts.service read the rule from the registry,
    subscribed with the rendered MQTT account, caught up from QuestDB (the fixture waited
    for both lines) and now opens an alert for a node above the rule's threshold."""
    log = services.alerts.log_path.read_text()
    assert re.search(r"caught up: \d+ stored samples since the checkpoint replayed", log)
    samples = asyncio.run(
        _publish_node(lab.ports["mqtt"], lab.edge_password, ALERTING_NODE, THRESHOLD + 5)
    )
    query = (
        "SELECT a.site_id, a.metric, a.state, a.value FROM alerts a"
        " JOIN alert_rules r ON r.id = a.rule_id WHERE a.appliance_id = %s AND r.name = 'ROP high'"
    )
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(lab.registry_dsn, autocommit=True) as conn:
            rows = conn.execute(query, (ALERTING_NODE,)).fetchall()
        if rows or time.monotonic() > deadline:
            break
        assert services.alerts.running, services.alerts.log_path.read_text()[-3000:]
        time.sleep(0.5)
    # one alert, opened by the first sample above the threshold, not repeated by the others
    assert rows == [(SITE, "ROP", "open", samples[0][1])], services.alerts.log_path.read_text()


def test_report_service_renders_every_site(lab: Lab, services: Services) -> None:
    """derrick-report.service's ExecStart, run once as its timer would: the previous month of
    every site of the registry (s901, seeded by the services fixture) into the report dir."""
    command = _unit_command(lab, "derrick-report.service")
    month = previous_month(dt.datetime.now(dt.UTC))
    done = subprocess.run(
        command.argv,
        env=command.env,
        cwd=command.cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = lab.root / "var/lib/derrick/reports"
    assert out.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in out.iterdir()) == [SITE]
    files = sorted((out / SITE).iterdir())
    assert [p.name for p in files] == [
        f"{SITE}-{month}-alerts.csv",
        f"{SITE}-{month}-daily.csv",
        f"{SITE}-{month}.pdf",
    ]
    assert sorted(done.stdout.split()) == [str(p) for p in files]  # the CLI prints them
    assert files[2].read_bytes().startswith(b"%PDF-")
    assert files[1].read_text().startswith("day,appliance,device,metric,")


# -- idempotence and check mode ----------------------------------------------------------------


def test_second_run_changes_nothing(lab: Lab) -> None:
    second = lab.second.result()
    _assert_ok(second)
    assert _recap(lab.first)["lab"][1] > 0
    assert _recap(second)["lab"][1] == 0, second.stdout[-6000:]
    assert "migrate" in second.stdout  # the migration ran again and found nothing to do


def test_check_mode_with_packages_accounts_and_emqx_passes(lab: Lab) -> None:
    """Packages, accounts, apt repositories and an EMQX node: planned in check mode only."""
    run = lab.check.result()
    _assert_ok(run)
    assert set(_recap(run)) == {"lab", "emqx1"}
    # the EMQX node gets every TLS file emqx.conf names (and the role refuses to go on
    # without them: cloud_broker_emqx_required_certs)
    tls = run.stdout.split("TASK [cloud_broker : Install the TLS files emqx.conf names]")[1]
    tls = tls.split("TASK [")[0]
    for name in ("ca.pem", "server.pem", "server.key", "site-ca.pem", "pg-ca.pem"):
        assert f"(item={name})" in tls, tls
    assert list(lab.check_root.iterdir()) == [], "check mode wrote files"


def test_no_secret_reaches_the_ansible_output(lab: Lab) -> None:
    runs = (lab.first, lab.second.result(), lab.check.result())
    for run in runs:
        for name, value in lab.secrets.items():
            assert value not in run.stdout, name
    assert lab.emqx_cookie not in lab.check.result().stdout
