"""The legacy fixtures (every version, every anomaly) against the detection and migration
logic the Ansible modules wrap: versions, anomalies, translated configuration, hand-off."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import load_config
from tests.fleet.legacy_fixtures import (
    ANOMALIES,
    BACKUP_DIR,
    VERSIONS,
    build_appliance,
    tree_digest,
)
from tests.fleet.legacy_module import REPO, load

legacy = load()
NOW = int(time.time())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_every_version_is_detected_and_translated(tmp_path: Path, version: str, seed: int) -> None:
    exp = build_appliance(tmp_path, "s017-a042", version, seed=seed, now_s=NOW)
    before = tree_digest(tmp_path)
    facts = legacy.detect(str(tmp_path))
    assert facts["version"] == version and not facts["anomalies"] and facts["upgradable"]
    plan = facts["config"]
    assert (plan["appliance"], plan["site"]) == ("s017-a042", "s017")
    assert (plan["normal_per_min"], plan["alarm_per_min"]) == (
        exp.normal_per_min,
        exp.alarm_per_min,
    )
    got = [(s["tag"], s["unit"], s["hot"], s["source"], s.get("scale"), s.get("offset"))
           for s in plan["sensors"]]  # fmt: skip
    want = [(s.tag, s.unit, s.hot, s.source, s.scale, s.offset) for s in exp.sensors]
    assert got == want
    assert plan["opcua_endpoint"] == exp.opcua_endpoint
    rows = sorted(legacy.unsent_readings(str(tmp_path), version, plan), key=lambda r: (r[1], r[0]))
    assert rows == [(r.tag, r.ts_ns, r.value) for r in exp.unsent]
    assert exp.unsent and (exp.collected > 0) == (version[1] in "124" and version != "v4.0"
                                                  and version != "v4.1")  # fmt: skip
    assert tree_digest(tmp_path) == before, "detection changed the appliance"


def test_v1_spool_days_v14_gzips_closed_days(tmp_path: Path) -> None:
    # 18:00 UTC of today: readings (the last ~30 h up to an hour ago) fall on two UTC days
    # and some on today, whatever time the test runs (just after midnight there are none).
    evening = NOW - NOW % 86400 + 18 * 3600
    build_appliance(tmp_path, "s017-a001", "v1.4", seed=3, now_s=evening)
    names = sorted(p.name for p in (tmp_path / "var/lib/cdd/spool").iterdir())
    assert names[0] == ".collected" and names[-1].endswith(".csv")
    assert all(n.endswith(".csv.gz") for n in names[1:-1]) and len(names) >= 3


@pytest.mark.parametrize(
    ("version", "anomaly"),
    [(v, "no-marker") for v in VERSIONS]
    + [("v2.0", "aborted-upgrade"), ("v2.3", "aborted-upgrade")]
    + [(v, "invalid-config") for v in ("v1.0", "v1.4", "v2.0", "v2.3", "v3.1", "v3.2", "v4.2")],
)
def test_anomalies_are_reported(tmp_path: Path, version: str, anomaly: str) -> None:
    exp = build_appliance(tmp_path, "s017-a042", version, seed=5, anomaly=anomaly, now_s=NOW)
    facts = legacy.detect(str(tmp_path))
    codes = [a["code"] for a in facts["anomalies"]]
    assert codes == [anomaly]
    assert facts["upgradable"] == exp.converge
    if exp.converge:
        assert facts["version"] == version and facts["inferred"] == exp.inferred


def test_handoff_is_accepted_by_the_agent(tmp_path: Path) -> None:
    """The hand-off and the TOML of each family pass the real agent's validation and import."""
    for version in ("v1.4", "v2.3", "v3.2", "v4.2"):
        root = tmp_path / version
        exp = build_appliance(root, "s017-a042", version, seed=9, now_s=NOW)
        plan = legacy.detect(str(root))["config"]
        agent = {"mqtt_servers": [{"host": "127.0.0.1", "port": 1}]}
        toml = root / legacy.AGENT_CONFIG
        toml.parent.mkdir(parents=True)
        toml.write_text(legacy.agent_toml(plan, str(root), version, agent))
        handoff = root / legacy.HANDOFF_FILE
        handoff.parent.mkdir(parents=True)
        handoff.write_text(legacy.handoff_text(str(root), version, plan))
        done = subprocess.run(
            [sys.executable, "-m", "edge", "import-legacy", "--config", str(toml), str(handoff)],
            cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"imported {len(exp.unsent)} readings" in done.stdout


def test_backup_and_restore_are_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_appliance(root, "s017-a042", "v4.1", seed=4, now_s=NOW)
    before = tree_digest(root, exclude=(BACKUP_DIR,))
    backup, sha = legacy.write_backup(str(root), "v4.1", str(root / BACKUP_DIR))
    assert legacy.file_sha256(backup) == sha
    (root / "etc/derrick").mkdir()
    (root / "etc/derrick/agent.toml").write_text("x")
    (root / "var/lib/cdd-edge/queue.db").write_bytes(b"damaged")
    (root / "opt/cdd-edge/current").unlink()
    legacy.restore_backup(str(root), backup)
    assert tree_digest(root, exclude=(BACKUP_DIR,)) == before


def test_generator_covers_every_anomaly() -> None:
    assert set(ANOMALIES) == {"no-marker", "aborted-upgrade", "invalid-config", "disk-full",
                              "unreachable"}  # fmt: skip
    assert json.dumps(sorted(VERSIONS))


@pytest.mark.parametrize("login", [False, True])
def test_agent_toml_is_a_valid_agent_configuration(tmp_path: Path, login: bool) -> None:
    """The TOML the migration writes loads with the agent's own schema; with a login, the
    username and the password file (never the password) are in it."""
    build_appliance(tmp_path, "s017-a042", "v3.1", seed=3, now_s=NOW)
    plan = legacy.detect(str(tmp_path))["config"]
    agent = {"mqtt_servers": [{"host": "127.0.0.1", "port": 18830}],
             "publish": {"interval_ms": 500}, "mqtt_username": "s017-a042" if login else "",
             "mqtt_password_set": login}  # fmt: skip
    text = legacy.agent_toml(plan, str(tmp_path), "v3.1", agent)
    path = tmp_path / legacy.AGENT_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    cfg = load_config(path)
    assert (cfg.node.site, cfg.node.appliance) == ("s017", "s017-a042")
    assert [(s.host, s.port) for s in cfg.mqtt.servers] == [("127.0.0.1", 18830)]
    assert [s.tag for s in cfg.devices[0].sensors] == [s["tag"] for s in plan["sensors"]]
    if login:
        assert cfg.mqtt.username == "s017-a042"
        assert cfg.mqtt.password_file == tmp_path / legacy.MQTT_PASSWORD_FILE
    else:
        assert cfg.mqtt.username is None and cfg.mqtt.password_file is None
