"""Broker security on a real Mosquitto over TLS: per-node credentials and role ACLs rendered
from the registry (``api.registry.write_broker_files``), a test CA made here.

What is proved: a node cannot publish as another node (its credentials, another node's
topics), cannot publish into another site, cannot declare the Primary Host's STATE, cannot
command a node (not even itself), and reads only its own commands even when it subscribes to
everything; a site gateway carries only its own site; a reader cannot command; the Primary
Host can. Refusal is observed where it matters: the Primary Host's own subscription to
``spBv1.0/#`` never sees the refused messages.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import psycopg
import pytest
from psycopg import sql

from api import migrate, registry
from api.broker_auth import ServiceRole
from harness import Mosquitto, Postgres
from harness.tls import ScratchPki, make_scratch_pki

pytestmark = [pytest.mark.integration]


@pytest.fixture
def reg(postgres: Postgres) -> Iterator[psycopg.Connection]:
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate.apply(postgres.dsn_for(name))
    with psycopg.connect(postgres.dsn_for(name), autocommit=True) as conn:
        yield conn
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _tls(pki: ScratchPki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Tls:
    def __init__(self, broker: Mosquitto, pki: ScratchPki, passwords: dict[str, str]) -> None:
        self.broker, self.pki, self.passwords = broker, pki, passwords

    def client(self, user: str, password: str | None = None) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            self.broker.tls_port,
            username=user,
            password=self.passwords[user] if password is None else password,
            identifier=f"{user}-{uuid.uuid4().hex[:6]}",
            tls_context=_tls(self.pki),
            timeout=5,
        )

    async def connects(self, user: str, password: str | None = None) -> bool:
        try:
            async with self.client(user, password):
                return True
        except aiomqtt.MqttError:
            return False


async def _topics_until(client: aiomqtt.Client, sentinel: str, seen: list[str]) -> None:
    """Collect topics from ``client`` until ``sentinel`` arrives (10 s at most)."""

    async def collect() -> None:
        async for message in client.messages:
            seen.append(str(message.topic))
            if str(message.topic) == sentinel:
                return

    await asyncio.wait_for(collect(), 10)


@pytest.mark.asyncio
async def test_impersonation_cross_site_and_role_abuse_are_refused_over_tls(
    reg: psycopg.Connection, tmp_path: Path
) -> None:
    registry.create_tenant(reg, "acme", "Acme")
    for site in ("s101", "s102"):
        registry.create_site(reg, site, "acme")
    passwords = {a: registry.provision(reg, a).password for a in ("s101-a001", "s101-a002")}
    passwords["s102-a001"] = registry.provision(reg, "s102-a001").password
    passwords["ingest"] = registry.create_service_account(reg, "ingest").password
    passwords["gw-s101"] = registry.create_service_account(
        reg, "gw-s101", ServiceRole.SITE_GATEWAY, "s101"
    ).password
    passwords["api-live"] = registry.create_service_account(
        reg, "api-live", ServiceRole.READER
    ).password
    files = registry.write_broker_files(reg, tmp_path / "auth")
    pki = make_scratch_pki(tmp_path / "pki")

    broker = Mosquitto(
        tmp_path / "mosquitto",
        insecure_allow_anonymous=False,
        password_file=files["mosquitto.passwd"],
        acl_file=files["mosquitto.acl"],
        tls=pki,
    )
    with broker:
        tls = Tls(broker, pki, passwords)
        # TLS is real: a client that does not trust the test CA fails the handshake (a raw
        # handshake: paho leaks the socket of a failed TLS connect)
        with (
            socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
        # credentials are per node: node A's name with node B's password, or no account
        assert not await tls.connects("s101-a001", passwords["s101-a002"])
        assert not await tls.connects("intruder", "x")
        assert await tls.connects("s101-a002")

        seen: list[str] = []
        async with tls.client("ingest") as host, tls.client("s101-a001") as node:
            await host.subscribe("spBv1.0/#", qos=1)
            # the node asks for everything: it must still only get what is its own
            await node.subscribe("spBv1.0/#", qos=1)
            for topic in (
                "spBv1.0/s101/NDATA/s101-a002",  # impersonation: a neighbour's topics
                "spBv1.0/s101/NBIRTH/s101-a002",
                "spBv1.0/s101/DDATA/s101-a002/daq",
                "spBv1.0/s102/NDATA/s101-a001",  # its own name under another site
                "spBv1.0/s102/NDATA/s102-a001",  # another site's node
                "spBv1.0/STATE/derrick",  # only the Primary Host declares STATE
                "spBv1.0/s101/NCMD/s101-a002",  # commanding another node
                "spBv1.0/s101/DCMD/s101-a002/daq",
                "spBv1.0/s101/NCMD/s101-a001",  # or itself: commands come from the host
                "spBv1.0/s101/NDATA/s101-a001",  # its own data: these two arrive
                "spBv1.0/s101/DDATA/s101-a001/daq",
            ):
                await node.publish(topic, b"node", qos=1)
            await _topics_until(host, "spBv1.0/s101/DDATA/s101-a001/daq", seen)
            assert seen == ["spBv1.0/s101/NDATA/s101-a001", "spBv1.0/s101/DDATA/s101-a001/daq"]

            # the site gateway carries its own site only, and never STATE or commands
            seen.clear()
            async with tls.client("gw-s101") as gateway:
                for topic in (
                    "spBv1.0/s102/NDATA/s102-a001",
                    "spBv1.0/STATE/derrick",
                    "spBv1.0/s101/NCMD/s101-a001",
                    "spBv1.0/s101/NDATA/s101-a002",
                ):
                    await gateway.publish(topic, b"gw", qos=1)
            await _topics_until(host, "spBv1.0/s101/NDATA/s101-a002", seen)
            assert seen == ["spBv1.0/s101/NDATA/s101-a002"]

            # a reader cannot command; the Primary Host can, and only the addressee hears it
            async with tls.client("api-live") as reader:
                await reader.publish("spBv1.0/s101/NCMD/s101-a001", b"reader", qos=1)
            await host.publish("spBv1.0/s101/NCMD/s101-a002", b"host", qos=1)
            await host.publish("spBv1.0/STATE/derrick", b'{"online":true}', qos=1)
            await host.publish("spBv1.0/s101/NCMD/s101-a001", b"host", qos=1)
            got: list[tuple[str, bytes]] = []

            async def node_inbox() -> None:
                async for message in node.messages:
                    assert isinstance(message.payload, bytes)
                    got.append((str(message.topic), message.payload))
                    if message.payload == b"host":
                        return

            await asyncio.wait_for(node_inbox(), 10)
            assert got == [
                ("spBv1.0/STATE/derrick", b'{"online":true}'),
                ("spBv1.0/s101/NCMD/s101-a001", b"host"),
            ]

            # the Primary Host cannot speak for a node: births, data and deaths of a site's
            # nodes are refused; its own KPI node's group is the only data it may publish
            seen.clear()
            async with tls.client("api-live") as reader:
                await reader.subscribe("spBv1.0/#", qos=1)
                for topic in (
                    "spBv1.0/s101/NBIRTH/s101-a001",
                    "spBv1.0/s101/NDATA/s101-a001",
                    "spBv1.0/s101/DDATA/s101-a001/daq",
                    "spBv1.0/s101/NDEATH/s101-a001",
                    "spBv1.0/s102/DBIRTH/s102-a001/daq",
                    "spBv1.0/derrick-cloud/NDATA/kpi-w0",  # allowed: arrives
                ):
                    await host.publish(topic, b"host", qos=1)
                await _topics_until(reader, "spBv1.0/derrick-cloud/NDATA/kpi-w0", seen)
            assert seen == ["spBv1.0/derrick-cloud/NDATA/kpi-w0"]
