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

from edge.queue import QueueStats
from edge.status import AgentStatus, write_status
from harness import QuestDB
from tests.fleet import legacy_module
from tests.fleet.legacy_fixtures import Expected, build_appliance

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = Path(sys.executable).parent
INSTALL_BUNDLE = REPO / "roles" / "derrick_install" / "files" / "install-bundle.sh"


def ansible(
    tool: str, *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``ansible-playbook``, ``ansible-inventory`` ... as a technician would, from
    ``ansible/`` with its ``ansible.cfg``."""
    return subprocess.run(
        [str(ANSIBLE_BIN / tool), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO / "ansible", check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
             "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})},
    )  # fmt: skip


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
                                    "ansible_port": 9, "ansible_ssh_timeout": 3,
                                    "ansible_ssh_retries": 0}  # fmt: skip
        return host

    def mark_converged(self, host: str, release: str = "0.1.0") -> None:
        """Leave ``host`` as a committed convergence leaves it: the release bundle installed
        (``install-bundle.sh``, dev bundle), the agent TOML migrated from its legacy
        configuration, ``state=committed``, and the status file a running, born agent writes
        (``edge.status``; this process stands in for the agent's pid, so health says OK)."""
        root = self.root(host)
        bundle = f"dev:{sys.executable}:{REPO}"
        subprocess.run(["sh", str(INSTALL_BUNDLE), str(root), release, bundle],
                       check=True, capture_output=True)  # fmt: skip
        legacy = legacy_module.load()
        facts = legacy.detect(str(root))
        agent = {"mqtt_servers": [{"host": "127.0.0.1", "port": 1883}]}
        toml = legacy.agent_toml(facts["config"], str(root), facts["version"], agent)
        (root / legacy.AGENT_CONFIG).parent.mkdir(parents=True, exist_ok=True)
        # the status below must stay fresh for the whole test
        (root / legacy.AGENT_CONFIG).write_text(toml + "\n[health]\nmax_status_age_s = 3600\n")
        state = {"state": "committed", "version": facts["version"], "committed_at": time.time()}
        (root / legacy.STATE_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / legacy.STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        now_ms = time.time_ns() // 1_000_000
        queue = QueueStats(batches=0, samples=0, oldest_created_ms=None, oldest_batch=None,
                           newest_batch=None, acked_batch=0, used_bytes=0,
                           max_bytes=150_000_000, evicted_samples=0)  # fmt: skip
        write_status(
            root / legacy.QUEUE_FILE,
            AgentStatus(pid=os.getpid(), appliance=host, version=release, updated_ms=now_ms,
                        live=True, connected_since_ms=now_ms, last_ack_ms=now_ms,
                        mode="normal", queue=queue),
        )  # fmt: skip

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
        path = str(REPO / "ansible" / playbook)
        done = ansible(
            "ansible-playbook", "-i", str(inventory), path, *args, timeout=timeout, env=env_extra
        )
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


def births(questdb: QuestDB, table: str, host: str) -> set[str]:
    """The metrics ``host`` declared in its births (the ingest's metric catalogue)."""
    catalogue = table.replace("telemetry_raw", "metric_catalogue")
    result = questdb.exec_sql(f"SELECT DISTINCT metric FROM {catalogue} WHERE node = '{host}'")
    return {m for (m,) in result["dataset"]}


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
