"""A simulated drill site for the fleet playbooks: legacy appliances as root directories on the
local connection, an inventory for them, ``ansible-playbook`` runs, and the agents' cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import QuestDB
from tests.fleet.legacy_fixtures import Expected, build_appliance

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = Path(sys.executable).parent


@dataclass
class Site:
    base: Path
    name: str = "s017"
    appliances: dict[str, Expected] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def root(self, host: str) -> Path:
        return self.base / "appliances" / host

    def add(self, number: int, version: str, *, seed: int = 1, anomaly: str | None = None) -> str:
        host = f"{self.name}-a{number:03d}"
        self.appliances[host] = build_appliance(
            self.root(host), host, version, seed=seed, anomaly=anomaly
        )
        if anomaly == "unreachable":  # nothing listens on port 9 of the loopback
            self.host_vars[host] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1",
                                    "ansible_port": 9, "ansible_ssh_timeout": 3}  # fmt: skip
        return host

    def inventory(self, mqtt_port: int, **extra: Any) -> Path:
        hosts = {
            host: {"derrick_root": str(self.root(host)), "ansible_connection": "local",
                   **self.host_vars.get(host, {})}
            for host in self.appliances
        }  # fmt: skip
        doc = {
            "all": {
                "vars": {
                    "derrick_switch_service_manager": "process",
                    "derrick_install_source": f"dev:{sys.executable}:{REPO}",
                    "derrick_install_check_mode_interpreter": sys.executable,
                    "derrick_migrate_mqtt_servers": [{"host": "127.0.0.1", "port": mqtt_port}],
                    "derrick_migrate_publish": {"interval_ms": 200, "link_bytes_per_s": 200000},
                    "derrick_switch_health_delay_s": 2,
                    "derrick_switch_health_timeout_s": 60,
                    "derrick_switch_trial_timeout_s": 600,
                    "derrick_report_dir": str(self.base / "reports"),
                    **extra,
                },
                "children": {"appliances": {"children": {self.name: {"hosts": hosts}}}},
            }
        }
        path = self.base / "inventory.json"
        (self.base / "reports").mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
        return path

    def play(
        self,
        inventory: Path,
        playbook: str = "fleet-converge.yml",
        *args: str,
        timeout: int = 600,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env_extra or {})}  # fmt: skip
        done = subprocess.run(
            [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory),
             str(REPO / "ansible" / playbook), *args],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO / "ansible",
            check=False,
        )  # fmt: skip
        (self.base / "last-play.log").write_text(done.stdout + done.stderr)
        return done

    def report(self, host: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.base / "reports" / f"{host}.json").read_text())
        return doc

    def stop_agents(self) -> None:
        for host in self.appliances:
            pidfile = self.root(host) / "run/derrick-edge.pid"
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
        # trial watchdogs of appliances the test left in trial
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                if (
                    len(cmd) > 3
                    and cmd[1].endswith(b"derrick_switch.py")
                    and cmd[3].startswith(str(self.base).encode())
                ):
                    os.kill(int(proc.name), signal.SIGTERM)


def stored_rows(questdb: QuestDB, table: str, node: str) -> list[tuple[int, str, float]]:
    """The node's historical rows (the legacy backlog arrives as history), duplicates kept."""
    try:
        result = questdb.exec_sql(
            f"SELECT ts::long, metric, value FROM {table} WHERE node = '{node}' AND historical"
        )
    except Exception:  # the table does not exist before the first flush
        return []
    return [(t, m, v) for t, m, v in result["dataset"]]


def wait_backlogs_stored(
    site: Site, questdb: QuestDB, table: str, hosts: list[str], timeout: float = 90.0
) -> None:
    """Every unsent legacy reading of ``hosts`` in QuestDB, original timestamp, engineering
    value, exactly once."""
    deadline = time.monotonic() + timeout
    missing: dict[str, set[tuple[int, str, float]]] = {}
    while time.monotonic() < deadline:
        missing = {}
        for host in hosts:
            want = {(r.ts_ns, r.tag, r.value) for r in site.appliances[host].unsent}
            lost = want - set(stored_rows(questdb, table, host))
            if lost:
                missing[host] = lost
        if not missing:
            break
        time.sleep(1)
    assert not missing, {h: sorted(m)[:3] for h, m in missing.items()}
    for host in hosts:
        want = {(r.ts_ns, r.tag, r.value) for r in site.appliances[host].unsent}
        rows = [r for r in stored_rows(questdb, table, host) if r in want]
        assert len(rows) == len(want), (host, len(rows), len(want))  # no reading twice


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out
