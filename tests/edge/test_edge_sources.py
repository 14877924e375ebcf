"""Sources without servers: the device config union, simulator events, CSV replay, OPC UA
value mapping, and quality from the source through the queue, the wire and the ingest."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import ua

from core import conventions
from core.sparkplug import DataType, MessageType, decode_payload
from core.sparkplug.session import EdgeNodeSession, MetricDef
from edge.config import ConfigError, CsvDevice, OpcUaDevice, SimulatorDevice, parse_config
from edge.queue import PendingSample, StoreAndForwardQueue
from edge.sources.base import Reading
from edge.sources.csv_replay import CsvReplayError, CsvReplaySource, CsvRows, parse_time
from edge.sources.opcua import reading_of
from edge.sources.simulator import DrillingSimulator
from harness.derrick import ALL_TAGS
from ingest.pipeline import MessageProcessor
from tests.edge.sinks import RecordingSink

HEAD = """
[node]
site = "s017"
appliance = "s017-a042"
[mqtt]
servers = [{host = "127.0.0.1"}]
[queue]
path = "/tmp/q.db"
"""


def test_devices_are_a_tagged_union_and_old_configs_mean_the_simulator() -> None:
    cfg = parse_config(
        HEAD
        + """
[[devices]]
id = "daq"
seed = 3
sensors = [{tag = "WOB", unit = "klbf"}]
[[devices]]
id = "opc"
source = "opcua"
endpoint = "opc.tcp://10.17.0.5:4840"
sensors = [{tag = "GAS", unit = "%", node_id = "ns=2;s=Rig.GAS"}]
[[devices]]
id = "csv"
source = "csv"
path = "/data/well.csv"
speed = 10.0
sensors = [{tag = "ROP", unit = "ft/h", column = "Rate Of Penetration"}]
"""
    )
    daq, opc, csv = cfg.devices
    assert isinstance(daq, SimulatorDevice) and daq.seed == 3
    assert isinstance(opc, OpcUaDevice) and opc.security == "None"
    assert isinstance(csv, CsvDevice) and csv.historical and csv.speed == 10.0


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ('source = "opcua"\nendpoint = "opc.tcp://x:4840"\nsensors = [{tag = "WOB", '
         'unit = "klbf"}]', "needs a node_id - at `$.devices[0].sensors[0].node_id`"),
        ('source = "opcua"\nendpoint = "opc.tcp://x:4840"\nsecurity = "SignAndEncrypt"\n'
         'sensors = [{tag = "WOB", unit = "klbf", node_id = "ns=2;s=W"}]', "needs certificate"),
        ('source = "modbus"\nsensors = [{tag = "WOB", unit = "klbf"}]', "Invalid value 'modbus'"),
        ('source = "csv"\nsensors = [{tag = "WOB", unit = "klbf"}]',
         "missing required field `path`"),
    ],
)  # fmt: skip
def test_source_config_errors_say_where(device: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + '[[devices]]\nid = "d"\n' + device + "\n")
    assert expected in str(info.value)


def test_simulator_events_raise_gas_h2s_pit_and_pressure_deterministically() -> None:
    tags = ["GAS", "H2S", "PIT", "SPP"]
    quiet = DrillingSimulator(7, recurring_events=False)
    kicked = DrillingSimulator(7, recurring_events=False)
    kicked.schedule("gas_kick", 1_000.0)
    kicked.schedule("pressure_spike", 2_000.0)
    before = [quiet.read(tags, t) for t in (900.0, 1_100.0, 2_007.0)]
    after = [kicked.read(tags, t) for t in (900.0, 1_100.0, 2_007.0)]
    assert before[0] == after[0]  # same seed, no event yet: the same values
    assert after[1]["GAS"] > 20 and after[1]["H2S"] > 10 and after[1]["PIT"] > before[1]["PIT"]
    assert after[2]["SPP"] > before[2]["SPP"] + 2000
    again = DrillingSimulator(7, recurring_events=False)
    again.schedule("gas_kick", 1_000.0)
    again.schedule("pressure_spike", 2_000.0)
    assert [again.read(tags, t) for t in (900.0, 1_100.0, 2_007.0)] == after


def test_simulator_cycles_drilling_connection_tripping_with_each_phase_physics() -> None:
    """Two cycles read every 5 s: the phases come in the rig's order with their lengths,
    and each phase moves the signals as a driller expects."""
    sim = DrillingSimulator(3, recurring_events=False)
    t0 = 1_800_000_000.0
    runs: list[tuple[str, list[dict[str, float]]]] = []  # consecutive reads of one phase
    for i in range(2 * 1890 // 5):
        t = t0 + 5 * i
        phase = sim.phase(t)
        values = sim.read(ALL_TAGS, t)
        if not runs or runs[-1][0] != phase:
            runs.append((phase, []))
        runs[-1][1].append(values)
    order = [p for p, _ in runs]
    start = order.index("connection")
    assert order[start : start + 4] == ["connection", "drilling", "tripping", "drilling"]
    lengths = {p: [len(r) * 5 for q, r in runs[1:-1] if q == p] for p in set(order)}
    assert all(abs(n - 90) <= 5 for n in lengths["connection"]), lengths
    assert all(abs(n - 300) <= 5 for n in lengths["tripping"]), lengths
    for phase, reads in runs:
        depth = [v["DEPTH"] for v in reads]
        for v in reads:
            if phase == "drilling":  # the bit advances, rotating under weight, pumps on
                assert v["ROP"] > 0 and v["RPM"] > 80 and v["WOB"] > 5 and v["TQ"] > 0, v
                assert v["SPP"] > 2000 and v["FLWI"] > 500 and v["HDTH"] == v["DEPTH"], v
            else:  # off bottom: no rotation, no progress
                assert v["ROP"] == 0 and v["RPM"] == 0 and v["TQ"] == 0, (phase, v)
                assert v["HDTH"] == round(v["DEPTH"] + 0.5, 4), (phase, v)
            if phase == "connection":  # pumps off for the new stand
                assert v["SPP"] < 100 and v["FLWI"] == 0, v
            if phase == "tripping":  # pumping while the pipe moves, hook carries the string
                assert v["SPP"] > 2000 and v["HKLD"] > 270, v
        if phase == "drilling" and len(reads) > 10:
            assert depth[-1] > depth[0]
        elif phase != "drilling":
            assert max(depth) - min(depth) < 0.2, (phase, depth[0], depth[-1])
    again = DrillingSimulator(3, recurring_events=False)
    assert [again.read(ALL_TAGS, t0 + 5 * i) for i in range(20)] == [
        r for _, reads in runs for r in reads
    ][:20]


def test_recurring_events_come_from_the_seed() -> None:
    sim = DrillingSimulator(11)
    kicks = {e.start for t in range(0, 6 * 3600, 60) for e in sim.events_at(float(t))
             if e.kind == "gas_kick"}  # fmt: skip
    assert len(kicks) == 2
    other = DrillingSimulator(11)
    assert kicks == {e.start for t in range(0, 6 * 3600, 60)
                     for e in other.events_at(float(t)) if e.kind == "gas_kick"}  # fmt: skip


def test_opcua_values_keep_source_time_and_map_status_to_quality() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    good = ua.DataValue(ua.Variant(41.5, ua.VariantType.Double), SourceTimestamp=when)
    assert reading_of("WOB", good, 0) == Reading("WOB", 41.5, ms, 192)
    uncertain = ua.DataValue(
        ua.Variant(1.0, ua.VariantType.Double),
        StatusCode=ua.StatusCode(ua.UInt32(0x40000000)),
        SourceTimestamp=when,
    )
    assert reading_of("WOB", uncertain, 0).quality == 500
    bad = ua.DataValue(ua.Variant(None), StatusCode=ua.StatusCode(ua.UInt32(0x808B0000)))
    assert reading_of("WOB", bad, 123) == Reading("WOB", None, 123, 0)


def test_quality_travels_through_queue_and_wire_and_the_ingest_does_not_store_bad(
    tmp_path: Path,
) -> None:
    queue = StoreAndForwardQueue(tmp_path / "q.db", max_bytes=10_000_000)
    queue.open()
    alias = queue.register_metric("opc", "WOB", int(DataType.Double))
    now = 1_800_000_000_000
    (batch,) = queue.commit(
        {"opc": [PendingSample(alias, now, 41.5, True), PendingSample(alias, now + 1, None, True,
                                                                       quality=0)]},
        now_ms=now,
    )  # fmt: skip
    (due,) = queue.due(now_ms=now, resend_after_ms=0, max_samples=10, devices=frozenset({"opc"}))
    assert [s.quality for s in due.samples] == [192, 0]
    queue.close()
    session = EdgeNodeSession(
        group_id="s017", edge_node_id="s017-a042", clock=lambda: now,
        metrics=[MetricDef(alias, "opc", "WOB", DataType.Double, "klbf", True)],
    )  # fmt: skip
    session.will(0)
    nbirth = session.nbirth({})
    dbirth = session.dbirth("opc", {})
    data = session.data(
        "opc", [(s.alias, s.ts_ms, s.value, s.ns, s.quality) for s in due.samples],
        historical=False, batch=batch.id,
    )  # fmt: skip
    metrics = decode_payload(data.payload, {alias: DataType.Double}).metrics
    assert metrics[0].properties is None  # good: no property on the wire
    assert metrics[1].properties is not None and metrics[1].is_null
    assert metrics[1].properties[conventions.PROP_QUALITY].value == 0
    host = MessageProcessor(primary_host_id="derrick", clock=lambda: now, max_payload_bytes=1 << 20)
    for out in (nbirth, dbirth):
        host.process(str(out.topic), out.payload)
    assert data.topic.message_type is MessageType.DDATA
    outcome = host.process(str(data.topic), data.payload)
    assert [r.value for r in outcome.numeric] == [41.5]
    assert outcome.not_good == 1 and outcome.batches == [batch.id] and not outcome.dead_letters


def test_parse_time_accepts_epoch_seconds_milliseconds_and_iso() -> None:
    assert parse_time("1700000000") == 1_700_000_000_000
    assert parse_time("1700000000123") == 1_700_000_000_123
    assert parse_time("2023-11-14T22:13:20.5Z") == 1_700_000_000_500


async def test_csv_replay_maps_columns_keeps_row_times_and_paces_faster_than_real_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "well.csv"
    path.write_text(
        "time,Bit Depth,WOB,RPM\n"
        "2023-11-14T22:13:20Z,8000.0,25.1,120\n"
        "2023-11-14T22:13:21Z,8000.1,,121\n"
        "2023-11-14T22:13:22Z,8000.2,25.3,n/a\n",
        encoding="utf-8",
    )
    cfg = parse_config(
        HEAD + f'[[devices]]\nid = "csv"\nsource = "csv"\npath = "{path}"\nspeed = 4.0\n'
        'sensors = [{tag = "DEPTH", unit = "ft", column = "Bit Depth"}, '
        '{tag = "WOB", unit = "klbf"}, {tag = "RPM", unit = "rpm"}]\n'
    )
    device = cfg.devices[0]
    assert isinstance(device, CsvDevice)
    source, sink = CsvReplaySource(device), RecordingSink()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await source.run(sink)
    elapsed = loop.time() - started
    assert 0.4 < elapsed < 1.5  # two seconds of data at 4x
    t0 = 1_700_000_000_000
    assert sink.states == [True] and source.rows_replayed == 3 and source.skipped_cells == 2
    assert {(r.tag, r.ts_ms, r.value) for r in sink.readings} == {
        ("DEPTH", t0, 8000.0), ("WOB", t0, 25.1), ("RPM", t0, 120.0),
        ("DEPTH", t0 + 1000, 8000.1), ("RPM", t0 + 1000, 121.0),
        ("DEPTH", t0 + 2000, 8000.2), ("WOB", t0 + 2000, 25.3),
    }  # fmt: skip


async def test_csv_time_column_missing_or_unparsable_is_an_error_naming_file_and_line(
    tmp_path: Path,
) -> None:
    """Seed 001's files call the column ``timestamp``: with the default ``time`` the replay
    refuses (it used to stamp every row "now" silently); ``time_column = ""`` paces from now."""
    path = tmp_path / "well.csv"
    path.write_text("timestamp,WOB\n2023-11-14T22:13:20Z,25.1\nyesterday,25.2\n")

    def device(extra: str) -> CsvDevice:
        cfg = parse_config(
            HEAD + f'[[devices]]\nid = "csv"\nsource = "csv"\npath = "{path}"\nspeed = 1000.0\n'
            f'{extra}sensors = [{{tag = "WOB", unit = "klbf"}}]\n'
        )
        dev = cfg.devices[0]
        assert isinstance(dev, CsvDevice)
        return dev

    with pytest.raises(CsvReplayError, match=r"well\.csv: no time column 'time' \(header: "
                       r"timestamp, WOB\)"):  # fmt: skip
        list(CsvRows(device("")))
    with pytest.raises(CsvReplayError, match=r"well\.csv, line 3: time 'yesterday'"):
        list(CsvRows(device('time_column = "timestamp"\n')))
    rows = list(CsvRows(device('time_column = ""\n')))
    assert rows == [(None, {"WOB": 25.1}), (None, {"WOB": 25.2})]
