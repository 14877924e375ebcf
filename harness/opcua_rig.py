"""A drilling rig served by an OPC UA server (asyncua), for demos, tests and benchmarks.

The rig's signals come from the same ``DrillingSimulator`` the agent's local channels use,
so the two paths (local channels, OPC UA) can be compared. Every tag is a Double variable
``ns=<rig namespace>;s=<prefix>.<TAG>`` (``ns=2;s=Rig.WOB``, as v4.1 appliances name them)
with an ``EngineeringUnits`` description in its ``Description``.

The server samples its simulator at the fastest sampling interval its clients' monitored
items asked for (asyncua's server accepts the interval but reports every write, so the rig
itself honours it); without a client it samples every ``idle_s``. Each write carries the
sample time as ``SourceTimestamp``. With ``record`` every value written is appended as a
JSON line ``[ts_ms, tag, value_or_null, status]`` (what the server published, for tests);
``status`` writes ``{"sampling_ms": ...}`` whenever the sampling interval changes.

Run it: ``python -m harness.opcua_rig --port 4840 [--seed 1] [--prefix Rig ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from edge.sources.simulator import DrillingSimulator
from harness.derrick import ALL_TAGS, UNITS

log = logging.getLogger(__name__)

NAMESPACE = "urn:derrick:rig-sim"


class RigServer:
    """An OPC UA server publishing one simulated rig per ``prefixes`` entry."""

    def __init__(
        self,
        port: int,
        *,
        seed: int = 0,
        tags: Sequence[str] = ALL_TAGS,
        prefixes: Sequence[str] = ("Rig",),
        idle_s: float = 1.0,
        min_sampling_ms: float = 20.0,
        certificate: Path | None = None,
        private_key: Path | None = None,
        record: Path | None = None,
        status: Path | None = None,
        bad_quality: Sequence[str] = (),
    ) -> None:
        self.port = port
        self._tags = list(tags)
        self._prefixes = list(prefixes)
        self._idle_s = idle_s
        self._min_sampling_ms = min_sampling_ms
        self._cert, self._key = certificate, private_key
        self._record_path, self._status_path = record, status
        self._record: TextIO | None = None
        self._bad = set(bad_quality)
        self.sims = [DrillingSimulator(seed + i) for i in range(len(self._prefixes))]
        self._server = Server()
        self._nodes: list[list[tuple[str, ua.NodeId]]] = []
        self._requested: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.sampling_ms: float | None = None
        self.ticks = 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/derrick/rig"

    async def start(self) -> None:
        server = self._server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Derrick rig simulator")
        await server.set_application_uri("urn:derrick:rig-sim:server")
        if self._cert is not None and self._key is not None:
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.NoSecurity,
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ]
            )
            await server.load_certificate(str(self._cert))
            await server.load_private_key(str(self._key))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE)
        for prefix in self._prefixes:
            rig = await server.nodes.objects.add_object(
                ua.NodeId(ua.String(prefix), ua.Int16(ns)), prefix
            )
            nodes = []
            for tag in self._tags:
                var = await rig.add_variable(
                    ua.NodeId(ua.String(f"{prefix}.{tag}"), ua.Int16(ns)),
                    tag,
                    0.0,
                    varianttype=ua.VariantType.Double,
                )
                await var.write_attribute(
                    AttributeIds.Description,
                    ua.DataValue(ua.Variant(ua.LocalizedText(f"{tag} [{UNITS[tag]}]"))),
                )
                nodes.append((tag, var.nodeid))
            self._nodes.append(nodes)
        self._watch_sampling()
        if self._record_path is not None:
            self._record = self._record_path.open("a", encoding="utf-8")
        await server.start()
        self._task = asyncio.create_task(self._sample_loop(), name="rig-sampler")
        log.info("OPC UA rig server at %s (%d variables)", self.endpoint, self.variables)

    @property
    def variables(self) -> int:
        return sum(len(n) for n in self._nodes)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._server.stop()
        if self._record is not None:
            self._record.close()

    async def __aenter__(self) -> RigServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _watch_sampling(self) -> None:
        """Record the sampling interval each subscription's monitored items ask for."""
        service = self._server.iserver.subscription_service
        create, modify = service.create_monitored_items, service.modify_monitored_items

        async def create_items(params: ua.CreateMonitoredItemsParameters) -> Any:
            for item in params.ItemsToCreate:
                self._note(params.SubscriptionId, item.RequestedParameters.SamplingInterval)
            return await create(params)

        def modify_items(params: ua.ModifyMonitoredItemsParameters) -> Any:
            for item in params.ItemsToModify:
                self._note(params.SubscriptionId, item.RequestedParameters.SamplingInterval)
            return modify(params)

        service.create_monitored_items = create_items  # type: ignore[method-assign]
        service.modify_monitored_items = modify_items  # type: ignore[method-assign]

    def _note(self, subscription: int, requested_ms: float) -> None:
        self._requested[subscription] = requested_ms

    def _period_ms(self) -> float | None:
        live = self._server.iserver.subscription_service.subscriptions
        wanted = [ms for sid, ms in self._requested.items() if sid in live and ms > 0]
        return max(self._min_sampling_ms, min(wanted)) if wanted else None

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            period = self._period_ms()
            if period != self.sampling_ms:
                self.sampling_ms = period
                log.info("rig sampling every %s ms", period)
                if self._status_path is not None:
                    self._status_path.write_text(json.dumps({"sampling_ms": period}))
            await self._tick()
            # A fixed rate, not a fixed pause: a slow tick does not stretch the period; but
            # always leave the server a fifth of it to serve its clients.
            step = (period / 1000) if period else self._idle_s
            due = max(due + step, loop.time())
            await asyncio.sleep(max(due - loop.time(), step / 5))

    async def _tick(self) -> None:
        ts_ms = time.time_ns() // 1_000_000
        now = ts_ms / 1000
        when = ua.DateTime.fromtimestamp(now, UTC)  # exactly ts_ms (microsecond resolution)
        self.ticks += 1
        lines = []
        for sim, nodes in zip(self.sims, self._nodes, strict=True):
            values = sim.read(self._tags, now)
            for tag, nodeid in nodes:
                bad = tag in self._bad and self.ticks % 2 == 0
                status = ua.StatusCode(
                    ua.UInt32(StatusCodes.BadSensorFailure if bad else StatusCodes.Good)
                )
                value = values[tag]
                dv = ua.DataValue(
                    ua.Variant(value, ua.VariantType.Double),
                    StatusCode=status,
                    SourceTimestamp=when,
                    ServerTimestamp=when,
                )
                await self._server.write_attribute_value(nodeid, dv)
                if self._record is not None:
                    lines.append(json.dumps([ts_ms, tag, value, "bad" if bad else "good"]))
        if self._record is not None:
            self._record.write("\n".join(lines) + "\n")
            self._record.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.opcua_rig", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", action="append", help="one rig per prefix (default Rig)")
    p.add_argument("--tags", default=",".join(ALL_TAGS))
    p.add_argument("--idle-s", type=float, default=1.0)
    p.add_argument("--certificate", type=Path)
    p.add_argument("--private-key", type=Path)
    p.add_argument("--record", type=Path)
    p.add_argument("--status", type=Path)
    p.add_argument("--bad-quality", action="append", default=[], help="a tag sent bad 1 in 2")
    p.add_argument("--gas-kick-at", type=float, help="epoch s of a gas kick on every rig")
    return p


async def _serve(args: argparse.Namespace) -> None:
    rig = RigServer(
        args.port,
        seed=args.seed,
        tags=args.tags.split(","),
        prefixes=args.prefix or ["Rig"],
        idle_s=args.idle_s,
        certificate=args.certificate,
        private_key=args.private_key,
        record=args.record,
        status=args.status,
        bad_quality=args.bad_quality,
    )
    if args.gas_kick_at is not None:
        for sim in rig.sims:
            sim.schedule("gas_kick", args.gas_kick_at)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with rig:
        print(f"[opcua-rig] serving {rig.endpoint}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
