"""Where ``roles/cloud_cold`` may run: ``ansible/cloud.yml`` limited to the cold host, run for
real with ``ansible-playbook`` into a temporary root (local connection, offline service
manager). The nightly job verifies and replays the ingest workers' audit chains, so the role
refuses a cold host that cannot see them (ingest on other hosts, no shared volume declared),
naming the hosts and the way out, and refuses a second cold host; with the shared volume
declared it converges. The full run of the rendered job is in ``test_cloud_roles.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SECRET_DSN = "host=127.0.0.1 port=1 user=admin password=cold-placement-secret dbname=qdb"


def _run(tmp: Path, ingest: list[str], cold: list[str], **extra: object) -> tuple[int, str]:
    """cloud.yml for the cold hosts only (the other plays match no host of the limit)."""
    root = tmp / "root"
    root.mkdir(exist_ok=True)
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    common = {
        "cloud_root": str(root),
        "cloud_service_manager": "offline",
        "cloud_manage_accounts": False,
        "cloud_python": sys.executable,
        "cloud_app_dir": str(REPO),
        "cloud_cold_questdb_pg_dsn": SECRET_DSN,
        "cloud_cold_questdb_http_url": "http://127.0.0.1:1",
        "cloud_cold_questdb_ilp_conf": "http::addr=127.0.0.1:1;",
        **extra,
    }
    inventory = {
        "all": {
            "vars": common,
            "children": {
                "ingest": {"hosts": {name: host for name in ingest}},
                "cold": {"hosts": {name: host for name in cold}},
            },
        }
    }
    path = tmp / "inventory.json"
    path.write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(path),
         "--limit", ",".join(cold), "cloud.yml"],
        cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert SECRET_DSN not in output
    return run.returncode, output


def test_refuses_a_cold_host_that_cannot_see_the_audit_chains(tmp_path: Path) -> None:
    rc, output = _run(tmp_path, ingest=["ingest-a", "ingest-b"], cold=["cold-1"])
    assert rc != 0
    assert "ingest runs on ingest-a, ingest-b, not only on cold-1" in output, output[-3000:]
    assert "cloud_cold_audit_shared: true" in output
    assert not (tmp_path / "root/etc/derrick/cold.toml").exists()


def test_refuses_two_cold_hosts(tmp_path: Path) -> None:
    rc, output = _run(
        tmp_path, ingest=["ingest-a"], cold=["cold-1", "cold-2"], cloud_cold_audit_shared=True
    )
    assert rc != 0
    assert "one cold host per deployment (this play has 2)" in output, output[-3000:]


def test_converges_with_the_shared_audit_volume_declared(tmp_path: Path) -> None:
    rc, output = _run(
        tmp_path, ingest=["ingest-a", "ingest-b"], cold=["cold-1"], cloud_cold_audit_shared=True
    )
    assert rc == 0, output[-4000:]
    root = tmp_path / "root"
    toml = (root / "etc/derrick/cold.toml").read_text()
    assert f'audit_directory = "{root}/var/lib/derrick/audit"' in toml
    assert (root / "var/lib/derrick/audit").is_dir()
    timers = root / "etc/systemd/system/timers.target.wants"
    assert sorted(p.name for p in timers.iterdir()) == [
        "derrick-cold-freshness.timer",
        "derrick-cold-nightly.timer",
    ]
