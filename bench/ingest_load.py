"""Load for the ingest benchmark: the two message shapes and the processes that send them.

* :func:`live_shape` and :func:`replay_shape` build births and alias-only DDATA (with the
  ``derrick_batch`` extension) for many simulated edge nodes, encoded once with our codec.
* ``python bench/ingest_load.py blast`` writes pre-framed MQTT 3.1.1 PUBLISH packets (QoS 0)
  to the broker over a plain socket, as fast as the socket takes them: the generator costs a
  few µs per message, so it is not what the benchmark measures (paho's pipelined QoS 0
  publisher manages about 20,000 messages/s, about the target itself).
* ``python bench/ingest_load.py paced`` sends the live shape at a fixed metric rate, each
  message encoded beforehand with the time it is due as its sample timestamp, and records
  (send time, metrics sent so far) so that the bench can tell how old the newest row
  QuestDB shows is.
* ``python bench/ingest_load.py naive-consumer`` is the baseline in the style of the seeds'
  Kafka consumer: one JSON document per sample, one ``INSERT`` per row over PGWire.

Used by ``bench/ingest_bench.py``; not a tool on its own.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import conventions
from core.sparkplug import DataType, MessageType, Metric, Payload, Topic, encode_payload

#: Metrics each simulated device declares in its DBIRTH (aliases 10..59).
DECLARED = 50
FIRST_ALIAS = 10
NODES_PER_SITE = 100
DATATYPES = {FIRST_ALIAS + i: DataType.Double for i in range(DECLARED)}


def site_of(node: int) -> str:
    return f"s{node // NODES_PER_SITE:03d}"


def node_id(node: int) -> str:
    return f"{site_of(node)}-a{node:04d}"


@dataclass
class Load:
    """Births and data of one shape, each as (topic, payload)."""

    name: str
    births: list[tuple[str, bytes]] = field(default_factory=list)
    data: list[tuple[str, bytes]] = field(default_factory=list)
    metrics: int = 0  # data metrics in ``data``: the rows QuestDB must end up with
    catalogue: int = 0  # catalogue rows the births produce

    def sites(self) -> list[str]:
        return sorted({topic.split("/")[1] for topic, _ in self.births})


def births(node: int, t0: int) -> list[tuple[str, bytes]]:
    site, edge = site_of(node), node_id(node)
    nbirth = Payload(
        timestamp=t0,
        seq=0,
        metrics=[
            Metric(name="bdSeq", datatype=DataType.Int64, value=1),
            Metric(name=conventions.REBIRTH_METRIC, datatype=DataType.Boolean, value=False),
            Metric(name=conventions.ACKED_BATCH_METRIC, alias=1, datatype=DataType.UInt64, value=0),
            Metric(
                name=conventions.OLDEST_BATCH_METRIC, alias=2, datatype=DataType.UInt64, value=0
            ),
        ],
    )
    dbirth = Payload(
        timestamp=t0,
        seq=1,
        metrics=[
            Metric(name=f"M{i:02d}", alias=FIRST_ALIAS + i, datatype=DataType.Double, value=0.0)
            for i in range(DECLARED)
        ],
    )
    return [
        (str(Topic(MessageType.NBIRTH, site, edge)), encode_payload(nbirth)),
        (str(Topic(MessageType.DBIRTH, site, edge, "daq")), encode_payload(dbirth)),
    ]


def ddata(
    node: int, k: int, ts: int, count: int, rng: random.Random, *, historical: bool = False
) -> tuple[str, bytes]:
    """Message ``k`` (0-based) of ``node``: ``count`` metrics stamped ``ts``, batch k + 1."""
    start = rng.randrange(DECLARED)
    metrics = [
        Metric(
            alias=FIRST_ALIAS + (start + j) % DECLARED,
            timestamp=ts,
            value=rng.uniform(0, 1000),
            is_historical=historical,
        )
        for j in range(count)
    ]
    payload = Payload(timestamp=ts, seq=(k + 2) % 256, metrics=metrics, batch=k + 1)
    topic = Topic(MessageType.DDATA, site_of(node), node_id(node), "daq")
    return str(topic), encode_payload(payload, DATATYPES)


def live_metrics(node: int, rng: random.Random) -> int:
    """3-10 metrics a message; every 40th appliance is in alarm (50 a message)."""
    return DECLARED if node % 40 == 0 else rng.randint(3, 10)


def live_shape(nodes: int, seconds: int, t0: int, seed: int = 1) -> Load:
    """Each appliance publishes once a second; messages go out second by second."""
    rng = random.Random(seed)
    load = Load("live")
    for n in range(nodes):
        load.births += births(n, t0)
    load.catalogue = nodes * (4 + DECLARED)
    for k in range(seconds):
        for n in range(nodes):
            count = live_metrics(n, rng)
            load.data.append(ddata(n, k, t0 + 1000 * k, count, rng))
            load.metrics += count
    return load


def replay_shape(nodes: int, messages: int, t0: int, per_message: int = 500) -> Load:
    """Historical catch-up: ``per_message`` metrics a message, distinct timestamps (10 ms)."""
    rng = random.Random(2)
    load = Load("replay")
    for n in range(nodes):
        load.births += births(n, t0)
    load.catalogue = nodes * (4 + DECLARED)
    steps = per_message // DECLARED
    for k in range(messages // nodes):
        for n in range(nodes):
            metrics = [
                Metric(
                    alias=FIRST_ALIAS + j,
                    timestamp=t0 + 10 * (k * steps + s),
                    value=rng.uniform(0, 1000),
                    is_historical=True,
                )
                for s in range(steps)
                for j in range(DECLARED)
            ]
            payload = Payload(timestamp=t0, seq=(k + 2) % 256, metrics=metrics, batch=k + 1)
            topic = Topic(MessageType.DDATA, site_of(n), node_id(n), "daq")
            load.data.append((str(topic), encode_payload(payload, DATATYPES)))
            load.metrics += len(metrics)
    return load


# -- MQTT 3.1.1 framing -------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes) -> bytes:
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + payload
    return b"\x30" + _remaining_length(len(body)) + body


def connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x00"  # level 4, clean session, keepalive off
    body = variable + struct.pack("!H", len(cid)) + cid
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"broker refused the connection: {connack!r}")
    return sock


def write_frames(path: Path, messages: list[tuple[str, bytes]]) -> None:
    path.write_bytes(b"".join(publish_packet(t, p) for t, p in messages))


def chunks(data: bytes, size: int = 1 << 16) -> Iterator[memoryview]:
    view = memoryview(data)
    for i in range(0, len(view), size):
        yield view[i : i + size]


def blast(port: int, frames: Path) -> None:
    """Send a file of pre-framed PUBLISH packets; print the send start and end (epoch ns)."""
    data = frames.read_bytes()
    sock = connect(port, f"bench-blast-{time.monotonic_ns()}")
    start = time.time_ns()
    for chunk in chunks(data):
        sock.sendall(chunk)
    end = time.time_ns()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    print(json.dumps({"start_ns": start, "end_ns": end}))


def paced(port: int, nodes: int, rate: float, seconds: float, out: Path) -> None:
    """The live shape at ``rate`` metrics/s for ``seconds``.

    Every message is encoded before the clock starts, stamped with the wall time it is due
    (its sample time), then sent when due: the generator's own CPU (encoding on the fly took
    ~20 % of a core at 50,000 metrics/s, on the cores the worker and QuestDB share) is out of
    the measurement. A message sent late keeps its due time as sample time, so any lag of the
    generator counts against the path, never for it.
    """
    rng = random.Random(3)
    sock = connect(port, f"bench-paced-{time.monotonic_ns()}")
    now_ms = time.time_ns() // 1_000_000
    sock.sendall(b"".join(publish_packet(t, p) for n in range(nodes) for t, p in births(n, now_ms)))
    # the births' settling time (2 s) covers the encoding (~1.5 s for 10 s at 50,000/s)
    lead_s = max(2.0, seconds * rate / 50_000 * 0.3)
    start_ms = time.time_ns() // 1_000_000 + int(lead_s * 1000)
    plan: list[tuple[int, bytes, int]] = []  # (due, ms after start; frame; metrics)
    total = int(seconds * rate)
    k = [0] * nodes
    node = sent = 0
    while sent < total:
        due_ms = int(sent / rate * 1000)
        count = live_metrics(node, rng)
        plan.append(
            (due_ms, publish_packet(*ddata(node, k[node], start_ms + due_ms, count, rng)), count)
        )
        k[node] += 1
        sent += count
        node = (node + 1) % nodes
    late_start_ms = max(0, time.time_ns() // 1_000_000 - start_ms)
    while (wait := start_ms / 1000 - time.time()) > 0:
        time.sleep(wait)
    # (sample time of the batch's earliest message, ns; metrics sent so far): every row of a
    # batch is charged from the earliest sample time in it
    log: list[tuple[int, int]] = []
    i = sent = max_lag_ms = 0
    while i < len(plan):
        elapsed_ms = time.time_ns() // 1_000_000 - start_ms
        first_due = plan[i][0]
        frames = []
        while i < len(plan) and plan[i][0] <= elapsed_ms:
            frames.append(plan[i][1])
            sent += plan[i][2]
            i += 1
        if frames:
            sock.sendall(b"".join(frames))
            log.append(((start_ms + first_due) * 1_000_000, sent))
            max_lag_ms = max(max_lag_ms, elapsed_ms - first_due)
        time.sleep(0.005)
    sock.sendall(b"\xe0\x00")
    sock.close()
    report = {"log": log, "metrics": sent, "late_start_ms": late_start_ms, "max_lag_ms": max_lag_ms}
    out.write_text(json.dumps(report))


# -- the naive baseline ---------------------------------------------------------------------


def naive_samples(load: Load, limit: int) -> list[bytes]:
    """The load's data as one JSON document per sample, as the seeds' producer sent them."""
    from core.sparkplug import decode_payload  # noqa: PLC0415

    names = {FIRST_ALIAS + i: f"M{i:02d}" for i in range(DECLARED)}
    out: list[bytes] = []
    for topic, payload in load.data:
        _, site, _, edge, device = topic.split("/")
        for m in decode_payload(payload, DATATYPES).metrics:
            doc = {
                "timestamp": m.timestamp,
                "site": site,
                "node": edge,
                "device": device,
                "metric": names[m.alias or 0],
                "value": m.value,
            }
            out.append(json.dumps(doc).encode())
            if len(out) == limit:
                return out
    return out


def naive_consumer(port: int, pg_dsn: str, table: str, expected: int) -> None:
    """Subscribe, ``json.loads`` each sample, one autocommitted INSERT per row; print timing."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    import psycopg  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    conn = psycopg.connect(pg_dsn, autocommit=True)
    sql = (
        f"INSERT INTO {table} (ts, site, node, device, metric, value, hot, historical, received)"
        " VALUES (%s::timestamp_ns, %s, %s, %s, %s, %s, false, false, now())"
    )
    state = {"n": 0, "first": 0}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-{time.monotonic_ns()}")

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        if state["n"] == 0:
            state["first"] = time.time_ns()
        conn.execute(
            sql,
            (
                doc["timestamp"] * 1000,
                doc["site"],
                doc["node"],
                doc["device"],
                doc["metric"],
                float(doc["value"]),
            ),
        )
        state["n"] += 1
        if state["n"] >= expected:
            c.disconnect()

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe("naive/#", qos=0)
        print("subscribed", flush=True)

    client.on_message = on_message
    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_forever()
    print(json.dumps({"first_ns": state["first"], "end_ns": time.time_ns(), "rows": state["n"]}))


def subscriber(port: int, client_kind: str, expected: int) -> None:
    """Receive ``expected`` messages on ``spBv1.0/#`` with the worker's MQTT connection
    (``ingest.mqtt``, gmqtt), with aiomqtt (the edge's client, the worker's before) or with
    paho's own network loop; print the time from the first to the last and the CPU time per
    message. The receive path alone: no decoding, no storing."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    state = {"n": 0, "first": 0, "cpu": 0.0}
    if client_kind == "paho":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{time.monotonic_ns()}")

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if state["n"] == 0:
                state["first"], state["cpu"] = time.time_ns(), time.process_time()
            bytes(msg.payload)
            state["n"] += 1
            if state["n"] >= expected:
                c.disconnect()

        def on_connect(c: mqtt.Client, *_: object) -> None:
            c.subscribe("spBv1.0/#", qos=0)
            print("subscribed", flush=True)

        client.on_message = on_message
        client.on_connect = on_connect
        client.connect("127.0.0.1", port, keepalive=60)
        client.loop_forever()
    elif client_kind == "worker":
        import asyncio  # noqa: PLC0415

        from ingest.mqtt import HostConnection  # noqa: PLC0415

        async def receive_worker() -> None:
            done = asyncio.Event()

            def on_message(topic: str, payload: bytes, retained: bool) -> None:
                if state["n"] == 0:
                    state["first"], state["cpu"] = time.time_ns(), time.process_time()
                state["n"] += 1
                if state["n"] >= expected:
                    done.set()

            conn = HostConnection(
                host="127.0.0.1", port=port, client_id=f"sub-{time.monotonic_ns()}",
                username=None, password=None, keepalive_s=60,
                will=("bench/will", b""), on_message=on_message,
            )  # fmt: skip
            await conn.connect()
            await conn.subscribe("spBv1.0/#", qos=0)
            print("subscribed", flush=True)
            await done.wait()
            await conn.close()

        asyncio.run(receive_worker())
    else:
        import asyncio  # noqa: PLC0415

        import aiomqtt  # noqa: PLC0415

        async def receive() -> None:
            async with aiomqtt.Client("127.0.0.1", port) as c:
                await c.subscribe("spBv1.0/#", qos=0)
                print("subscribed", flush=True)
                async for message in c.messages:
                    if state["n"] == 0:
                        state["first"], state["cpu"] = time.time_ns(), time.process_time()
                    str(message.topic), bytes(message.payload)  # what the worker reads
                    state["n"] += 1
                    if state["n"] >= expected:
                        return

        asyncio.run(receive())
    cpu = time.process_time() - state["cpu"]
    print(
        json.dumps(
            {"first_ns": state["first"], "end_ns": time.time_ns(), "n": state["n"], "cpu_s": cpu}
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("blast")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--frames", type=Path, required=True)
    p = sub.add_parser("paced")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    n = sub.add_parser("naive-consumer")
    n.add_argument("--port", type=int, required=True)
    n.add_argument("--pg-dsn", required=True)
    n.add_argument("--table", required=True)
    n.add_argument("--expected", type=int, required=True)
    r = sub.add_parser("subscriber")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--client", choices=["worker", "aiomqtt", "paho"], required=True)
    r.add_argument("--expected", type=int, required=True)
    args = parser.parse_args()
    if args.command == "subscriber":
        subscriber(args.port, args.client, args.expected)
    elif args.command == "blast":
        blast(args.port, args.frames)
    elif args.command == "paced":
        paced(args.port, args.nodes, args.rate, args.seconds, args.out)
    else:
        naive_consumer(args.port, args.pg_dsn, args.table, args.expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
