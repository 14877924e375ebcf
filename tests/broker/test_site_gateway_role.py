"""``roles/site_gateway`` and ``ansible/site-gateway.yml``, run for real with ``ansible-playbook``.

The playbook converges a site gateway into a temporary root on this machine (local
connection, ``site_gateway_service_manager: offline``: rendered and enabled with ``systemctl
--root``, nothing started). The broker is then started from what the converge rendered,
exactly as its unit says, against a cloud Mosquitto with TLS and client certificates: an
appliance of the site publishes to the gateway with its registry password and the cloud sees
its data through the bridge; an appliance of another site is refused at the gateway. A second
converge changes nothing, and the bridge password is in no output.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from api import broker_auth
from api.broker_auth import ServiceAccount, ServiceRole
from harness import Mosquitto, locate
from harness.ports import allocate_port, is_listening
from harness.process import ManagedProcess
from harness.tls import make_scratch_pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SITE = "s005"
NODE = f"{SITE}-a001"
STRANGER = "s006-a001"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s", re.M)


def _secret(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _converge(inventory: Path, extra_vars: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         "-e", f"@{extra_vars}", "site-gateway.yml"],
        cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"ansible-playbook failed:\n{run.stdout[-6000:]}{run.stderr}"
    return run


async def _publish(port: int, user: str, password: str, topic: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password) as client:
        await client.publish(topic, b"\x08\x01", qos=1)


async def _seen_at_cloud(cloud: Mosquitto, user: str, password: str, publish: object) -> list[str]:
    """Topics the cloud delivers to a reader within 3 s of ``publish()`` (a coroutine fn)."""
    topics: list[str] = []
    async with aiomqtt.Client("127.0.0.1", cloud.port, username=user, password=password) as c:
        await c.subscribe("spBv1.0/#", qos=1)
        await publish()  # type: ignore[operator]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                async for message in c.messages:
                    topics.append(str(message.topic))
    return topics


def test_converged_gateway_bridges_its_site_to_the_cloud(tmp_path: Path) -> None:
    pki = make_scratch_pki(tmp_path / "pki", clients=(f"gw-{SITE}",))
    controller = tmp_path / "controller"
    controller.mkdir()
    gateway_cred = broker_auth.issue_for(f"gw-{SITE}")
    watch_cred = broker_auth.issue_for("watch")
    cloud_accounts = [
        ServiceAccount(f"gw-{SITE}", ServiceRole.SITE_GATEWAY, SITE),
        ServiceAccount("watch", ServiceRole.READER),
    ]
    cloud = Mosquitto(
        tmp_path / "cloud",
        insecure_allow_anonymous=False,
        password_file=_secret(
            controller / "cloud.passwd",
            broker_auth.mosquitto_password_file([gateway_cred.credential, watch_cred.credential]),
        ),
        acl_file=_secret(
            controller / "cloud.acl", broker_auth.mosquitto_acl_file([], cloud_accounts)
        ),
        tls=pki,
        require_client_certificate=True,
    )
    # the site's files as `python -m api broker-files` makes them: its appliances only
    node = broker_auth.issue(NODE)
    stranger = broker_auth.issue(STRANGER)
    passwd = _secret(
        controller / "site.passwd",
        broker_auth.mosquitto_password_file([node.credential, stranger.credential]),
    )
    acl = _secret(controller / "site.acl", broker_auth.mosquitto_acl_file([NODE, STRANGER], []))
    root = tmp_path / "root"
    root.mkdir()
    gateway_port = allocate_port()
    with cloud:
        inventory = tmp_path / "inventory.json"
        host_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "site_gateway_root": str(root),
            "site_gateway_service_manager": "offline",
            "site_gateway_manage_packages": False,
            "site_gateway_manage_accounts": False,
            "site_gateway_user": getpass.getuser(),
            "site_gateway_bin": str(locate.mosquitto_binary()),
            "site_gateway_site": SITE,
            "site_gateway_listen_address": "127.0.0.1",
            "site_gateway_port": gateway_port,
            "site_gateway_password_file_src": str(passwd),
            "site_gateway_acl_file_src": str(acl),
            "site_gateway_cloud_address": f"127.0.0.1:{cloud.tls_port}",
            "site_gateway_bridge_ca_src": str(pki.ca),
            "site_gateway_bridge_cert_src": str(pki.clients[f"gw-{SITE}"].cert),
            "site_gateway_bridge_key_src": str(pki.clients[f"gw-{SITE}"].key),
        }
        hosts = {"site_gateways": {"hosts": {f"gw-{SITE}": host_vars}}}
        inventory.write_text(json.dumps({"all": {"children": hosts}}))
        vault = {"site_gateway_bridge_password": gateway_cred.password}
        secrets = _secret(tmp_path / "vault.json", json.dumps(vault))
        first = _converge(inventory, secrets)

        conf = root / "etc/derrick/site-gateway/mosquitto.conf"
        assert conf.stat().st_mode & 0o777 == 0o600
        assert (root / "etc/derrick/site-gateway/bridge.key").stat().st_mode & 0o777 == 0o600
        assert (root / "etc/derrick/site-gateway/passwd").stat().st_mode & 0o777 == 0o600
        assert f"remote_password {gateway_cred.password}" in conf.read_text()
        assert f"topic spBv1.0/{SITE}/NDATA/+ out 1" in conf.read_text()
        wants = root / "etc/systemd/system/multi-user.target.wants/derrick-site-gateway.service"
        assert wants.is_symlink()

        unit = (root / "etc/systemd/system/derrick-site-gateway.service").read_text()
        (exec_start,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
        broker = ManagedProcess(
            "site-gateway", shlex.split(exec_start.removeprefix("ExecStart=")),
            log_path=tmp_path / "site-gateway.out",
        )  # fmt: skip
        broker.start()
        try:
            deadline = time.monotonic() + 20
            while not is_listening(gateway_port):
                assert broker.running, (tmp_path / "site-gateway.out").read_text()
                assert time.monotonic() < deadline, "the converged gateway did not listen"
                time.sleep(0.2)
            bridged = f"as gw-{SITE} ("  # the cloud's log: "New client connected ... as gw-s005"
            while bridged not in cloud.log_path.read_text():
                assert time.monotonic() < deadline, "the bridge never connected to the cloud"
                time.sleep(0.2)
            time.sleep(1.0)  # the bridge's subscriptions at the cloud

            async def both() -> None:
                await _publish(gateway_port, NODE, node.password, f"spBv1.0/{SITE}/NDATA/{NODE}")
                with pytest.raises(aiomqtt.MqttError):  # the site's ACL: its own topics only
                    await _publish(
                        gateway_port, STRANGER, "not-its-password", f"spBv1.0/s006/NDATA/{STRANGER}"
                    )
                await _publish(
                    gateway_port, STRANGER, stranger.password, f"spBv1.0/s006/NDATA/{STRANGER}"
                )

            seen = asyncio.run(_seen_at_cloud(cloud, "watch", watch_cred.password, both))
            # the appliance of the site reached the cloud; the other site's appliance, though
            # it could log in at this gateway, is not carried (not this site's topics)
            assert seen == [f"spBv1.0/{SITE}/NDATA/{NODE}"], seen
        finally:
            broker.stop()

        second = _converge(inventory, secrets)
    changed = {host: int(n) for host, n in RECAP.findall(second.stdout)}
    assert changed == {f"gw-{SITE}": 0}, second.stdout[-3000:]
    for run in (first, second):
        assert gateway_cred.password not in run.stdout + run.stderr
