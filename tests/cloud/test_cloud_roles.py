"""The cloud roles and ``ansible/cloud.yml``, run for real with ``ansible-playbook``.

A lab (every group on this machine, local connection) converges into a temporary root with
``cloud_service_manager: offline``: everything is rendered and our units are enabled with
``systemctl --root``; nothing is started by systemd (there is none here). The tests then use
what was rendered as an operator would: Mosquitto is started as a plain process from the
rendered ``mosquitto.conf`` and refuses a wrong password, each ingest TOML passes
``python -m ingest check``, the registry is created and migrated in a real PostgreSQL,
the units pass ``systemd-analyze verify``. A second run changes nothing. Packages, system
accounts, repositories and an EMQX node are exercised in check mode, which must pass.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from harness import Postgres, locate
from harness.ports import allocate_port, is_listening

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOK = ANSIBLE_DIR / "cloud.yml"
GROUPS = ("brokers", "questdb", "postgres", "ingest", "api", "grafana")
RECAP = re.compile(
    r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


@dataclass(frozen=True)
class Lab:
    root: Path
    inventory: Path
    secrets: dict[str, str]
    mqtt_port: int
    mqtt_password: str
    registry_database: str
    registry_user: str
    postgres: Postgres
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


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


def _playbook(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run cloud.yml; its output goes to ``<inventory>-<n>.log`` as it runs (for diagnosis)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    runs = len(list(inventory.parent.glob(f"{inventory.stem}-*.log")))
    log = inventory.parent / f"{inventory.stem}-{runs}.log"
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory)]
    with log.open("w") as sink:
        done = subprocess.run(
            [*command, *extra, str(PLAYBOOK)],
            cwd=ANSIBLE_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    return subprocess.CompletedProcess(done.args, done.returncode, log.read_text(), "")


def _recap(run: subprocess.CompletedProcess[str]) -> dict[str, tuple[int, int, int, int]]:
    found = {m[0]: (int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in RECAP.findall(run.stdout)}
    assert found, f"no PLAY RECAP in:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    return found


def _assert_ok(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, (
        f"ansible-playbook failed:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    )
    for host, (_, _, unreachable, failed) in _recap(run).items():
        assert (unreachable, failed) == (0, 0), host


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, _postgres_server: Postgres) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("cloud-lab")
    root = base / "root"
    root.mkdir()
    pg = _postgres_server
    if not pg.running:
        pg.restart()
    mqtt_port = allocate_port()
    mqtt_password = secrets.token_urlsafe(18)
    passwd = base / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "derrick-ingest", mqtt_password], check=True
    )
    acl = base / "acl"
    acl.write_text("user derrick-ingest\ntopic readwrite spBv1.0/#\n")
    database = f"derrick_cloud_{uuid.uuid4().hex[:8]}"
    registry_password = secrets.token_urlsafe(18)
    lab_secrets = {
        "ilp": f"http::addr=127.0.0.1:9000;username=ingest;password={secrets.token_urlsafe(12)};",
        "qdb_dsn": f"host=localhost dbname=qdb user=admin password={secrets.token_hex(7)}",
        "registry": registry_password,
        "mqtt": mqtt_password,
        "grafana": secrets.token_urlsafe(12),
        "qdb_pg": secrets.token_urlsafe(12),
    }
    common: dict[str, object] = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "cloud_root": str(root),
        "cloud_service_manager": "offline",
        "cloud_manage_packages": False,
        "cloud_manage_accounts": False,
        "cloud_python": sys.executable,
        "cloud_app_dir": str(REPO),
        "cloud_broker_mosquitto_user": getpass.getuser(),
        "cloud_broker_mosquitto_bin": str(locate.mosquitto_binary()),
        "cloud_broker_mqtt_address": "127.0.0.1",
        "cloud_broker_mqtt_port": mqtt_port,
        "cloud_broker_password_file_src": str(passwd),
        "cloud_broker_acl_file_src": str(acl),
        "cloud_questdb_jar_src": str(locate.questdb_jar()),
        "cloud_questdb_java_bin": str(locate.java_binary()),
        "cloud_questdb_heap": "512m",
        "cloud_questdb_secrets": {"QDB_PG_PASSWORD": lab_secrets["qdb_pg"]},
        "cloud_postgres_psql": str(Path(locate.pg_bindir()) / "psql"),
        "cloud_postgres_admin_dsn": pg.dsn_for("postgres"),
        "cloud_postgres_admin_become_user": "",
        "cloud_postgres_registry_host": pg.host,
        "cloud_postgres_registry_port": pg.port,
        "cloud_postgres_registry_database": database,
        "cloud_postgres_registry_user": database,
        "cloud_postgres_registry_password": registry_password,
        "cloud_ingest_workers": 2,
        "cloud_ingest_shared_group": "derrick-ingest",
        "cloud_ingest_mqtt_port": mqtt_port,
        "cloud_ingest_mqtt_password": mqtt_password,
        "cloud_ingest_questdb_ilp_conf": lab_secrets["ilp"],
        "cloud_ingest_questdb_pg_dsn": lab_secrets["qdb_dsn"],
        "cloud_api_registry_dsn": (
            f"host={pg.host} port={pg.port} dbname={database} user={database}"
            f" password={registry_password}"
        ),
        "cloud_api_questdb_dsn": lab_secrets["qdb_dsn"],
        "cloud_grafana_questdb_password": lab_secrets["grafana"],
    }
    inventory = base / "inventory.yml"
    _write_inventory(inventory, common)
    try:
        first = _playbook(inventory)
        _assert_ok(first)
        second = _playbook(inventory)
        yield Lab(
            root,
            inventory,
            lab_secrets,
            mqtt_port,
            mqtt_password,
            database,
            database,
            pg,
            first,
            second,
        )
    finally:
        with psycopg.connect(pg.dsn_for("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{database}"')


def test_second_run_changes_nothing(lab: Lab) -> None:
    _assert_ok(lab.second)
    assert _recap(lab.first)["lab"][1] > 0
    assert _recap(lab.second)["lab"][1] == 0, lab.second.stdout[-6000:]


def test_no_secret_reaches_the_ansible_output(lab: Lab) -> None:
    for run in (lab.first, lab.second):
        for name, value in lab.secrets.items():
            assert value not in run.stdout + run.stderr, name


def test_secret_files_are_private(lab: Lab) -> None:
    for relative in (
        "etc/derrick/ingest.env",
        "etc/derrick/ingest-mqtt.password",
        "etc/derrick/api.env",
        "etc/questdb/questdb.env",
        "etc/grafana/derrick.env",
        "etc/mosquitto/derrick/passwd",
    ):
        path = lab.root / relative
        assert path.stat().st_mode & 0o777 == 0o600, relative
    assert (
        f"DERRICK_QUESTDB_ILP={lab.secrets['ilp']}"
        in (lab.root / "etc/derrick/ingest.env").read_text()
    )
    assert (lab.root / "etc/derrick/ingest-mqtt.password").read_text() == lab.mqtt_password


def test_rendered_ingest_configs_pass_validation(lab: Lab) -> None:
    for worker in (1, 2):
        config = lab.root / f"etc/derrick/ingest-{worker}.toml"
        text = config.read_text()
        assert text.startswith("# Ansible managed")
        assert f'worker = "w{worker}"' in text
        assert 'shared_group = "derrick-ingest"' in text
        assert f"port = {9300 + worker}" in text
        result = subprocess.run(
            [sys.executable, "-m", "ingest", "check", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    # The same validation refuses a broken file, naming the key.
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


def test_rendered_api_config_loads(lab: Lab) -> None:
    from api import config  # noqa: PLC0415 - the test reads the file as the service does

    cfg = config.load(lab.root / "etc/derrick/api.toml")
    assert (cfg.server.port, cfg.registry.dsn_env, cfg.questdb.dsn_env) == (
        8080,
        "DERRICK_PG_DSN",
        "DERRICK_QUESTDB_PG",
    )


def test_questdb_gets_the_settings_ingest_needs(lab: Lab) -> None:
    conf = (lab.root / "var/lib/questdb/conf/server.conf").read_text().splitlines()
    assert "cairo.commit.mode=sync" in conf
    assert "pg.net.bind.to=0.0.0.0:8812" in conf
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


def test_units_are_enabled_and_verify(lab: Lab) -> None:
    wants = lab.root / "etc/systemd/system/multi-user.target.wants"
    enabled = sorted(p.name for p in wants.iterdir())
    assert enabled == [
        "derrick-api.service",
        "derrick-ingest@1.service",
        "derrick-ingest@2.service",
        "mosquitto.service",
        "questdb.service",
    ]
    units = lab.root / "etc/systemd/system"
    for unit in ("mosquitto.service", "questdb.service", "derrick-api.service"):
        result = subprocess.run(
            ["systemd-analyze", "verify", str(units / unit)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{unit}: {result.stderr}"
    ingest = (units / "derrick-ingest@.service").read_text()
    assert f"-m ingest run --config {lab.root}/etc/derrick/ingest-%i.toml" in ingest
    assert f"EnvironmentFile={lab.root}/etc/derrick/ingest.env" in ingest


def test_registry_is_created_and_migrated(lab: Lab) -> None:
    dsn = lab.postgres.dsn_for(lab.registry_database).replace(
        f"user={lab.postgres.user} password=", f"user={lab.registry_user} password="
    )
    dsn = re.sub(r"password=\S+", f"password={lab.secrets['registry']}", dsn)
    with psycopg.connect(dsn) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert owner == (lab.registry_user,)
    assert {"tenants", "sites", "appliances"} <= tables
    assert "migrate" in lab.second.stdout  # the migration ran again and found nothing to do


async def _connect(port: int, client_id: str, password: str) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, username="derrick-ingest", password=password
    ) as client:
        await client.publish("spBv1.0/STATE/derrick", b"x")


def test_rendered_mosquitto_conf_runs_a_real_broker(lab: Lab) -> None:
    conf = lab.root / "etc/mosquitto/derrick.conf"
    assert conf.read_text().startswith("# Ansible managed")
    log = lab.root / "var/log/mosquitto/mosquitto.log"
    with subprocess.Popen([str(locate.mosquitto_binary()), "-c", str(conf)]) as proc:
        try:
            deadline = time.monotonic() + 15
            while not is_listening(lab.mqtt_port):
                assert proc.poll() is None, log.read_text() if log.exists() else "no log"
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.1)
            asyncio.run(_connect(lab.mqtt_port, "cloud-roles-test", lab.mqtt_password))
            with pytest.raises(aiomqtt.MqttCodeError):
                asyncio.run(_connect(lab.mqtt_port, "cloud-roles-bad", "wrong"))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert "cloud-roles-test" in log.read_text()


def test_check_mode_with_packages_accounts_and_emqx_passes(tmp_path: Path, lab: Lab) -> None:
    """Packages, accounts, apt repositories and an EMQX node: planned in check mode only.

    Runs with the system Python (apt needs python3-apt) against an empty root: nothing
    may be written, nothing may fail.
    """
    root = tmp_path / "root"
    root.mkdir()
    common = json.loads(lab.inventory.read_text())["all"]["vars"]
    common.update(
        {
            "ansible_python_interpreter": "/usr/bin/python3",
            "cloud_root": str(root),
            "cloud_manage_packages": True,
            "cloud_manage_accounts": True,
            "cloud_broker_mosquitto_user": "mosquitto",
        }
    )
    inventory = tmp_path / "inventory.yml"
    cookie = secrets.token_hex(16)
    emqx = {"cloud_broker_kind": "emqx", "cloud_broker_emqx_secrets": {"EMQX_NODE_COOKIE": cookie}}
    _write_inventory(inventory, common, brokers={"emqx1": emqx})
    run = _playbook(inventory, "--check")
    _assert_ok(run)
    recap = _recap(run)
    assert set(recap) == {"lab", "emqx1"}
    assert list(root.iterdir()) == [], "check mode wrote files"
    assert cookie not in run.stdout
    assert shutil.which("systemd-analyze")
