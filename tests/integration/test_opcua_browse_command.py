"""``python -m edge opcua-browse`` as a technician runs it, against the real rig server
(``harness.opcua_rig``): the proposed ``[[devices]]`` block maps every tag once, lists what it
could not map as ``# not mapped`` comments, and is a valid device of the agent's config as
printed; an unreachable server is exit code 1 with a one-line error naming the endpoint."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from edge.config import OpcUaDevice, parse_config
from harness.derrick import UNITS, opcua_rig_process, python_env
from harness.ports import allocate_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TAGS = ("WOB", "RPM", "GAS")
REPO = Path(__file__).resolve().parents[2]


def browse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "opcua-browse", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=python_env(),
        cwd=REPO,
    )


@pytest.mark.timeout(300)
def test_browse_proposes_a_mapping_the_agent_accepts(tmp_path: Path) -> None:
    port = allocate_port()
    rig_dir = tmp_path / "rig"
    # two rigs on one server: the second one's tags are duplicates, for a person to map
    rig = opcua_rig_process(
        rig_dir, port, args=("--tags", ",".join(TAGS), "--prefix", "Rig", "--prefix", "Spare")
    )
    endpoint = f"opc.tcp://127.0.0.1:{port}/derrick/rig"
    rig.start()
    try:
        deadline = time.monotonic() + 120
        while "[opcua-rig] serving" not in rig.log_path.read_text(encoding="utf-8"):
            assert rig.running, rig.log_path.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the rig server did not start"
            time.sleep(0.2)
        result = browse("--endpoint", endpoint, "--device-id", "rig1")
    finally:
        rig.stop()
    assert result.returncode == 0, result.stderr
    block = result.stdout
    proposed = tomllib.loads(block)["devices"]
    assert proposed == [
        {
            "id": "rig1",
            "source": "opcua",
            "endpoint": endpoint,
            "sensors": [{"tag": t, "unit": UNITS[t], "node_id": f"ns=2;s=Rig.{t}"} for t in TAGS],
        }
    ]
    comments = {line for line in block.splitlines() if line.startswith("#")}
    spare = {f"# not mapped: ns=2;s=Spare.{t} ({t})" for t in TAGS}
    assert spare <= comments, comments
    # the rest is the server's own standard nodes (namespace 0, e.g. i=32852 LastChange)
    assert all(c.startswith("# not mapped: i=") for c in comments - spare), comments
    # the block is pasted into an agent's config as printed
    cfg = parse_config(
        '[node]\nsite = "s017"\nappliance = "s017-a042"\n'
        '[mqtt]\nservers = [{host = "127.0.0.1"}]\n'
        f'[queue]\npath = "{tmp_path / "q.db"}"\n' + block
    )
    (device,) = cfg.devices
    assert isinstance(device, OpcUaDevice) and device.endpoint == endpoint
    assert [(s.tag, s.node_id) for s in device.sensors] == [(t, f"ns=2;s=Rig.{t}") for t in TAGS]


def test_unreachable_server_is_exit_1_naming_the_endpoint() -> None:
    endpoint = f"opc.tcp://127.0.0.1:{allocate_port()}/nobody"
    result = browse("--endpoint", endpoint)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"derrick-edge: cannot browse {endpoint}: "), result.stderr
    assert "Traceback" not in result.stderr
