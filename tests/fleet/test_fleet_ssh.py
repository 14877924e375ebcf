"""``fleet-converge.yml`` over real SSH: each appliance in its own network namespace, reached
through a veth pair, with its own sshd and host key (``tests/fleet/netns.py``); Ansible logs in
as root with the test's client key and checks the host key against a known-hosts file built
from the generated keys (``host_key_checking`` of ``ansible/ansible.cfg``, no opt-out).

The agents the switch starts run in the namespaces (children of sshd) and reach the test's
Mosquitto on its veth addresses; ingest and QuestDB stay on the loopback. An appliance whose
host key does not match is reported unreachable and left byte for byte untouched; then every
appliance converges and its unsent legacy readings land in QuestDB with their original
timestamps and engineering values."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import broker_auth
from api.broker_auth import IssuedPassword
from harness import Mosquitto, QuestDB
from harness.process import ManagedProcess
from tests.fleet.legacy_fixtures import tree_digest
from tests.fleet.netns import NamespacedSshd, NetnsLink, fingerprint, generate_key, namespaces
from tests.fleet.site import Site, wait_backlogs_stored

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

#: Appliances of three legacy generations (INI + gzipped spool, YAML, the newest layout).
VERSIONS = ("v1.4", "v2.3", "v4.1")


@pytest.fixture
def links() -> Iterator[list[NetnsLink]]:
    with namespaces(len(VERSIONS)) as made:
        yield made


APPLIANCES = [f"s017-a{n:03d}" for n in range(1, len(VERSIONS) + 1)]


def _secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def mqtt_logins() -> dict[str, IssuedPassword]:
    """One MQTT login per appliance (as the registry issues them) and the ingest's."""
    return {name: broker_auth.issue_for(name) for name in [*APPLIANCES, "ingest"]}


@pytest.fixture
def ingest_login(tmp_path: Path, mqtt_logins: dict[str, IssuedPassword]) -> tuple[str, Path]:
    return "ingest", _secret(tmp_path / "auth" / "ingest.pw", mqtt_logins["ingest"].password)


@pytest.fixture
def mosquitto(
    tmp_path: Path, links: list[NetnsLink], mqtt_logins: dict[str, IssuedPassword]
) -> Iterator[Mosquitto]:
    """The test's broker as a site's is: no anonymous client, each appliance confined to its
    own topics; also on the veth addresses the namespaces reach (overrides the loopback-only
    fixture of tests/conftest.py; ``ingest`` uses it)."""
    auth = tmp_path / "auth"
    creds = [mqtt_logins[a].credential for a in APPLIANCES]
    broker = Mosquitto(
        tmp_path / "mosquitto",
        insecure_allow_anonymous=False,
        password_file=_secret(
            auth / "site.passwd",
            broker_auth.mosquitto_password_file(creds, [mqtt_logins["ingest"].credential]),
        ),
        acl_file=_secret(auth / "site.acl", broker_auth.mosquitto_acl_file(APPLIANCES, ["ingest"])),
        extra_bind_addresses=[link.host_address for link in links],
    )
    with broker:
        yield broker


@pytest.fixture
def client_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "ssh" / "id_ed25519"
    key.parent.mkdir(mode=0o700)
    return key, generate_key(key, "derrick-fleet-test")


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """Where ssh keeps its shared connections: a short path (a socket path must stay under 108
    bytes, the test's tmp_path is long)."""
    with tempfile.TemporaryDirectory(prefix="dk-ssh-") as path:
        yield Path(path)


@pytest.fixture
def sshds(
    tmp_path: Path, links: list[NetnsLink], client_key: tuple[Path, str]
) -> Iterator[list[NamespacedSshd]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                NamespacedSshd(tmp_path / f"sshd-{n}", link, authorized_keys=[client_key[1]])
            )
            for n, link in enumerate(links)
        ]


def ssh_args(known_hosts: Path, control_dir: Path) -> str:
    """ssh options of every appliance: only the test's known hosts, checked strictly; SSH
    connection sharing in the test's own directory (no master from another run is reused)."""
    control_dir.mkdir(mode=0o700, exist_ok=True)
    return (
        f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
        f"-o StrictHostKeyChecking=yes -o ControlPath={control_dir}/%C"
    )


def test_appliances_converge_over_ssh_with_host_key_checking(
    tmp_path: Path,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    ingest: tuple[ManagedProcess, str],
    links: list[NetnsLink],
    sshds: list[NamespacedSshd],
    client_key: tuple[Path, str],
    control_dir: Path,
    mqtt_logins: dict[str, IssuedPassword],
) -> None:
    _, table = ingest
    site = Site(tmp_path / "site")
    hosts = [site.add(n + 1, version, seed=n + 11) for n, version in enumerate(VERSIONS)]
    assert hosts == APPLIANCES
    known_hosts = tmp_path / "ssh" / "known_hosts"
    known_hosts.write_text("".join(f"{sshd.known_hosts_line()}\n" for sshd in sshds))
    for host, link in zip(hosts, links, strict=True):
        site.host_vars[host] = {
            "ansible_connection": "ssh",
            "ansible_host": link.address,
            "ansible_port": 22,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(client_key[0]),
            "ansible_ssh_common_args": ssh_args(known_hosts, control_dir / "ok"),
            "derrick_migrate_mqtt_servers": [{"host": link.host_address, "port": mosquitto.port}],
            # as the inventories do (vault_derrick_mqtt_password from the vault)
            "derrick_mqtt_username": host,
            "derrick_mqtt_password": mqtt_logins[host].password,
        }
    inventory = site.inventory(mosquitto.port)
    before = tree_digest(site.root(hosts[0]))
    try:
        # A host key that is not the appliance's: ssh refuses, the appliance is reported
        # unreachable and nothing on it changes (with host_key_checking off ssh would log in).
        impostor = tmp_path / "ssh" / "impostor_key"
        wrong_hosts = tmp_path / "ssh" / "known_hosts.wrong"
        wrong_hosts.write_text(f"{links[0].address} {generate_key(impostor, 'impostor')}\n")
        wrong = tmp_path / "wrong-host-key.json"
        wrong.write_text(json.dumps(
            {"ansible_ssh_common_args": ssh_args(wrong_hosts, control_dir / "wrong")}
        ))  # fmt: skip
        refused = site.play(inventory, "fleet-converge.yml", "--limit", hosts[0], f"-e@{wrong}")
        assert refused.returncode == 0, refused.stdout[-4000:]
        assert "Host key verification failed" in refused.stdout, (
            "ansible/ansible.cfg must keep host_key_checking = True\n" + refused.stdout[-3000:]
        )
        assert site.report(hosts[0])["outcome"] == "unreachable"
        assert sshds[0].accepted_logins() == []
        assert tree_digest(site.root(hosts[0])) == before

        # one wave: the canary waves are test_fleet_converge.py's; here three SSH sessions at once
        done = site.play(
            inventory, "fleet-converge.yml", "-e", '{"derrick_converge_waves": ["100%"]}'
        )
        assert done.returncode == 0, done.stdout[-6000:]
        for host, sshd, link in zip(hosts, sshds, links, strict=True):
            exp = site.appliances[host]
            report = site.report(host)
            assert report["outcome"] == "converged", report
            assert report["version"] == exp.version
            assert report["anomalies"] == []
            # it really went over SSH: root logged in with the test's key on this appliance's
            # sshd, and the agent runs in the appliance's namespace
            logins = sshd.accepted_logins()
            assert logins, sshd.log_tail()
            assert all(f"for root from {link.host_address} " in line for line in logins), logins
            assert all(fingerprint(client_key[0]) in line for line in logins), logins
            agent = int((site.root(host) / "run/derrick-edge.pid").read_text())
            assert agent in link.pids(), (host, agent, link.pids())
            # its own login: the password only in a 0600 file, never in the TOML or the output
            password = site.root(host) / "etc/derrick/mqtt-password"
            assert password.read_text().strip() == mqtt_logins[host].password
            assert password.stat().st_mode & 0o777 == 0o600
            toml = (site.root(host) / "etc/derrick/agent.toml").read_text()
            assert f'username = "{host}"' in toml and f'password_file = "{password}"' in toml
            assert mqtt_logins[host].password not in toml
            assert mqtt_logins[host].password not in done.stdout + done.stderr
        wait_backlogs_stored(site, questdb, table, hosts)
    finally:
        site.stop_agents()
