"""Notifications from the outbox: signed webhooks to a local HTTP server (retries with
backoff, dead letter after N failures) and e-mail to a local SMTP server (aiosmtpd).

The signatures are checked as a receiver would, from the documented scheme (docs/alerts.md)
with ``hmac``/``hashlib`` alone, not with ``alerts.notify``'s own helpers: a change of header
names, signed string, hash or prefix fails here."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import itertools
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from alerts.config import NotifySettings, SmtpConfig
from alerts.notify import Notifier, backoff_s
from alerts.store import AlertStore
from core.alerting import Transition
from harness.ports import allocate_port

from .conftest import APPLIANCE, SITE, now_ms

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SECRET_OK, SECRET_BROKEN = "s3cret-ok-" + "x" * 30, "s3cret-broken-" + "y" * 30


def receiver_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The documented receiver check: ``X-Derrick-Signature`` is ``v1=`` + hex
    HMAC-SHA256(secret, ``<X-Derrick-Timestamp>.`` + body), compared in constant time."""
    timestamp = headers["x-derrick-timestamp"]
    signature = headers["x-derrick-signature"]
    signed = timestamp.encode() + b"." + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Hooks(http.server.ThreadingHTTPServer):
    """Records every POST (header names lowercased); ``/flaky`` fails twice then succeeds,
    ``/broken`` always fails."""

    def __init__(self, port: int) -> None:
        self.requests: list[tuple[str, float, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Hooks

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}  # case-blind
        self.server.requests.append((self.path, time.monotonic(), headers, body))
        seen = sum(1 for r in self.server.requests if r[0] == self.path)
        ok = self.path == "/flaky" and seen >= 3
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks(allocate_port())
    thread = threading.Thread(target=server.serve_forever, name="hooks", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), allocate_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


async def test_signed_webhooks_retry_dead_letter_and_email(
    registry_pool: AsyncConnectionPool[Any], hooks: Hooks, smtp: tuple[Mailbox, int]
) -> None:
    base = f"http://127.0.0.1:{hooks.server_address[1]}"
    async with registry_pool.connection() as conn:
        targets = []
        for kind, address, secret in (
            ("webhook", f"{base}/flaky", SECRET_OK),
            ("webhook", f"{base}/broken", SECRET_BROKEN),
            ("email", "driller@acme.example", None),
        ):
            row = await (
                await conn.execute(
                    "INSERT INTO notification_targets (tenant_id, kind, address, secret) "
                    "VALUES ('acme', %s, %s, %s) RETURNING id",
                    (kind, address, secret),
                )
            ).fetchone()
            assert row is not None
            targets.append(int(row[0]))
        row = await (
            await conn.execute(
                "INSERT INTO alert_rules (tenant_id, site_id, metric, name, severity, condition, "
                "targets, created_by) VALUES ('acme', %s, 'SPP', 'pump pressure high', "
                "'critical', %s, %s, 'test') RETURNING id",
                (SITE, Jsonb({"kind": "threshold", "op": "above", "value": 3000}), targets),
            )
        ).fetchone()
    assert row is not None
    rule = int(row[0])
    alert = await AlertStore(registry_pool).apply(
        Transition(
            "open",
            rule,
            f"{APPLIANCE}/SPP",
            SITE,
            APPLIANCE,
            "SPP",
            3100.0,
            now_ms(),
            "SPP 3100 above 3000",
        )
    )
    settings = NotifySettings(max_attempts=3, backoff_base_ms=50, poll_interval_ms=10)
    assert [backoff_s(settings, n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    box, smtp_port = smtp
    notifier = Notifier(
        registry_pool,
        settings,
        smtp=SmtpConfig(host="127.0.0.1", port=smtp_port, sender="alerts@derrick.example"),
    )
    deadline = time.monotonic() + 20
    while True:
        async with registry_pool.connection() as conn:
            states = await (
                await conn.execute(
                    "SELECT target_id, state, attempts, last_error FROM notification_deliveries "
                    "WHERE alert_id = %s ORDER BY target_id",
                    (alert,),
                )
            ).fetchall()
        if all(s[1] != "pending" for s in states):
            break
        assert time.monotonic() < deadline, states
        await notifier.deliver_due()
        await asyncio.sleep(0.01)

    assert [(s[1], s[2]) for s in states] == [("delivered", 3), ("dead", 3), ("delivered", 1)]
    assert "HTTP 500" in states[1][3]

    flaky = [r for r in hooks.requests if r[0] == "/flaky"]
    broken = [r for r in hooks.requests if r[0] == "/broken"]
    assert len(flaky) == 3 and len(broken) == 3  # no attempt after the dead letter
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(broken)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1, gaps  # backoff doubles
    for _path, _, headers, body in flaky:
        assert re.fullmatch(r"v1=[0-9a-f]{64}", headers["x-derrick-signature"]), headers
        assert re.fullmatch(r"[0-9]{10}", headers["x-derrick-timestamp"]), headers  # Unix s
        assert receiver_accepts(SECRET_OK, headers, body)
        assert not receiver_accepts(SECRET_BROKEN, headers, body)
        assert abs(int(headers["x-derrick-timestamp"]) - time.time()) < 60
        assert headers["x-derrick-event"] == "alert.opened"
        assert headers["content-type"] == "application/json"
    for _path, _, headers, body in broken:  # each target signs with its own secret
        assert receiver_accepts(SECRET_BROKEN, headers, body)
        assert not receiver_accepts(SECRET_OK, headers, body)
    assert len({r[2]["x-derrick-delivery"] for r in flaky}) == 1  # same id on every retry
    h, body = flaky[0][2], flaky[0][3]
    tampered = body.replace(b"3100", b"9999")
    assert tampered != body and not receiver_accepts(SECRET_OK, h, tampered)
    # the timestamp is signed too: the same body and signature under another time is refused
    replayed = {**h, "x-derrick-timestamp": str(int(h["x-derrick-timestamp"]) + 1)}
    assert not receiver_accepts(SECRET_OK, replayed, body)
    sent = msgspec.json.decode(flaky[-1][3])
    assert (sent["alert_id"], sent["value"], sent["rule"]) == (alert, 3100.0, "pump pressure high")

    assert len(box.messages) == 1
    sender, rcpts, content = box.messages[0]
    assert (sender, rcpts) == ("alerts@derrick.example", ["driller@acme.example"])
    assert b"Subject: [Derrick] critical alert opened: pump pressure high on s301-a001" in content
    assert b"SPP 3100 above 3000" in content
