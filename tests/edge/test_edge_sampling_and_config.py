"""Adaptive sampling, report by exception, and configuration validation (pure)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, parse_config
from edge.sampling import Deadband, SamplingPolicy

BASE = """
[node]
site = "s017"
appliance = "s017-a042"
[mqtt]
servers = [{host = "127.0.0.1", port = 1883}]
[queue]
path = "/tmp/q.db"
[sampling]
normal_per_min = 160
alarm_per_min = 3000
alarm_hold_s = 60
[[alarms]]
tag = "GAS"
above = 5.0
[[alarms]]
tag = "SPP"
rate_per_s = 100.0
[[devices]]
id = "daq"
sensors = [
  {tag = "GAS", unit = "%"}, {tag = "SPP", unit = "psi", deadband = 5.0},
  {tag = "WOB", unit = "klbf"}, {tag = "RPM", unit = "rpm"},
]
"""


def test_rates_are_per_appliance_and_spread_over_sensors() -> None:
    policy = SamplingPolicy(parse_config(BASE))
    assert policy.mode(0) == "normal"
    assert policy.interval_s(0) == pytest.approx(4 * 60 / 160)  # 1.5 s per sensor
    policy.commanded_alarm = True
    assert policy.interval_s(0) == pytest.approx(4 * 60 / 3000)  # 0.08 s: 500 values / 10 s
    policy.commanded_alarm = False
    assert policy.mode(0) == "normal"


def test_threshold_enters_alarm_and_hold_time_leaves_it() -> None:
    policy = SamplingPolicy(parse_config(BASE))
    assert not policy.observe({"GAS": 1.0}, 100)
    assert policy.observe({"GAS": 7.5}, 101)  # entered
    assert not policy.observe({"GAS": 8.0}, 102)  # already in alarm
    assert policy.in_alarm(150)
    policy.observe({"GAS": 1.0}, 103)  # cleared at 102; hold 60 s from the last trigger
    assert policy.in_alarm(161) and not policy.in_alarm(162.1)


def test_rate_of_change_enters_alarm() -> None:
    policy = SamplingPolicy(parse_config(BASE))
    policy.observe({"SPP": 2800.0}, 10)
    assert not policy.observe({"SPP": 2850.0}, 11)  # 50 psi/s
    assert policy.observe({"SPP": 3100.0}, 12)  # 250 psi/s: a pressure spike


def test_deadband_skips_small_changes_but_not_forever() -> None:
    band = Deadband({"SPP": 5.0}, max_silence_s=60)
    assert band.keep("SPP", 2800.0, 0)
    assert not band.keep("SPP", 2804.0, 1)
    assert band.keep("SPP", 2806.0, 2)
    assert not band.keep("SPP", 2806.5, 30)
    assert band.keep("SPP", 2806.5, 62.1)  # silent too long: reported anyway
    assert band.keep("WOB", 1.0, 0) and band.keep("WOB", 1.0, 0.1)  # no deadband


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("port = 1883", "port = 0"), "at `$.mqtt.servers[0].port`"),
        (
            ('tag = "GAS", unit = "%"', 'tag = "GAS", unit = "ppm"'),
            "at `$.devices[0].sensors[0].unit`",
        ),
        (('tag = "WOB"', 'tag = "XYZ"'), "unknown tag 'XYZ' - at `$.devices[0].sensors[2].tag`"),
        (('appliance = "s017-a042"', 'appliance = "s018-a042"'), "does not belong to site"),
        (("normal_per_min = 160", "normal_per_min = 0"), "at `$.sampling.normal_per_min`"),
        (("[queue]", "[queue]\nbogus = 1"), "unknown field `bogus` - at `$.queue`"),
        (('tag = "GAS"\nabove', 'tag = "H2S"\nabove'), "no sensor reads - at `$.alarms[0].tag`"),
        (("[[devices]]", "[[devices]\n"), "not valid TOML"),
    ],
)
def test_config_errors_name_the_key_path(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE.replace(*change, 1), source="agent.toml")
    assert expected in str(err.value) and str(err.value).startswith("agent.toml: ")


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE)
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace('unit = "klbf"', 'unit = "kg"'))
    root = Path(__file__).resolve().parents[2]
    ok = subprocess.run([sys.executable, "-m", "edge", "check-config", "--config", str(good)],
                        capture_output=True, text=True, cwd=root, check=False)  # fmt: skip
    assert ok.returncode == 0 and "valid (s017-a042, 4 sensors)" in ok.stdout
    no = subprocess.run([sys.executable, "-m", "edge", "check-config", "--config", str(bad)],
                        capture_output=True, text=True, cwd=root, check=False)  # fmt: skip
    assert no.returncode == 2 and "$.devices[0].sensors[2].unit" in no.stderr


@pytest.mark.asyncio
async def test_a_sampler_woken_within_its_millisecond_never_reads_twice_at_one_time(
    tmp_path: Path,
) -> None:
    """A mode change wakes every sampler at once; with a clock that stands still (as it does
    within a millisecond) each new read must still get a later time: two readings of one
    sensor at one time are one row in QuestDB (dedup keys), the first silently replaced."""
    import asyncio  # noqa: PLC0415

    from edge.agent import EdgeAgent  # noqa: PLC0415

    cfg = parse_config(
        '[node]\nsite = "s017"\nappliance = "s017-a042"\n'
        '[mqtt]\nservers = [{host = "127.0.0.1"}]\n'
        f'[queue]\npath = "{tmp_path / "q.db"}"\n'
        '[[devices]]\nid = "daq"\nsensors = [{tag = "WOB", unit = "klbf", deadband = 0.0}]\n'
    )
    agent = EdgeAgent(cfg, clock=lambda: 1_800_000_000_000)
    await agent._db(agent._queue.open)
    agent._session = await agent._db(agent._build_session)
    task = asyncio.create_task(agent._sample_loop("daq"))
    try:
        for _ in range(20):  # twenty mode changes, each waking the sampler at once
            await asyncio.sleep(0.003)
            agent._mode_changed.set()
        await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await agent._db(agent._queue.close)
    times = [s.ts_ms for s in agent._pending["daq"]]
    assert len(times) >= 10 and times == sorted(set(times)), times
