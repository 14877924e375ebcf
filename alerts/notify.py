"""Notifications: the outbox in PostgreSQL delivered to signed webhooks and by e-mail.

The evaluator writes one ``notification_deliveries`` row per target in the same transaction
as the alert change; :class:`Notifier` takes due rows (``FOR UPDATE SKIP LOCKED``, so several
notifiers never deliver one row twice at once), delivers, and records the outcome. A failed
attempt is retried after ``backoff_base_ms × 2^(attempt-1)`` (capped at ``backoff_max_ms``);
after ``max_attempts`` failures the row is dead-lettered (``state = 'dead'``, with the last
error), logged at WARNING and left for inspection.

**Webhooks** get the JSON body with

- ``X-Derrick-Timestamp``: Unix seconds at signing;
- ``X-Derrick-Signature``: ``v1=`` + hex HMAC-SHA256 over ``<timestamp>.<body bytes>`` with
  the target's secret. A receiver recomputes it, compares in constant time and rejects
  timestamps older than a few minutes (replays);
- ``X-Derrick-Event`` (``alert.opened``, ``alert.resolved``), ``X-Derrick-Delivery`` (row id:
  the same id on every retry, for idempotent receivers).

Any 2xx is success. **E-mail** goes through the configured SMTP server (STARTTLS and login
optional). Blocking network calls run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import email.message
import hashlib
import hmac
import logging
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from alerts import DeliveryError
from alerts.config import NotifySettings, SmtpConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Derrick-Signature"
TIMESTAMP_HEADER = "X-Derrick-Timestamp"

_DUE = """
SELECT d.id, d.attempts, d.event, d.body::text, t.kind, t.address, t.secret
FROM notification_deliveries d JOIN notification_targets t ON t.id = d.target_id
WHERE d.state = 'pending' AND d.next_attempt_at <= clock_timestamp()
ORDER BY d.next_attempt_at, d.id LIMIT %s
FOR UPDATE OF d SKIP LOCKED
"""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Derrick-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time comparison); without the age check."""
    try:
        expected = sign(secret, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def backoff_s(settings: NotifySettings, attempts: int) -> float:
    """Delay before the next try after ``attempts`` failed ones."""
    delay: int = settings.backoff_base_ms * 2 ** max(attempts - 1, 0)
    return min(delay, settings.backoff_max_ms) / 1000


def _post_webhook(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    if not url.startswith(("http://", "https://")):
        raise DeliveryError(f"unsupported webhook URL scheme in {url[:40]!r}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"webhook answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"webhook unreachable: {exc}") from exc
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook answered HTTP {status}")


def _subject(body: dict[str, Any]) -> str:
    what = "resolved" if body.get("event") == "alert.resolved" else "opened"
    return (
        f"[Derrick] {body.get('severity', '')} alert {what}: {body.get('rule', '')} "
        f"on {body.get('appliance', '')}"
    )


def _send_mail(
    smtp: SmtpConfig, password: str | None, to: str, body: dict[str, Any], timeout: float
) -> None:
    msg = email.message.EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = _subject(body)
    lines = [f"{k}: {body[k]}" for k in sorted(body) if body[k] is not None]
    msg.set_content("\n".join(lines) + "\n")
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
            if smtp.starttls:
                client.starttls()
            if smtp.username and password:
                client.login(smtp.username, password)
            client.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP delivery failed: {exc}") from exc


class Notifier:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        settings: NotifySettings,
        *,
        smtp: SmtpConfig | None = None,
        smtp_password: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._smtp = smtp
        self._smtp_password = smtp_password
        self._clock = clock

    def __repr__(self) -> str:
        return f"<Notifier smtp={'yes' if self._smtp else 'no'}>"

    async def _deliver(
        self, delivery_id: int, event: str, body_text: str, target: tuple[str, str, str | None]
    ) -> None:
        kind, address, secret = target
        body = msgspec.json.decode(body_text)
        timeout = self._settings.timeout_s
        if kind == "webhook":
            if secret is None:
                raise DeliveryError("webhook target without a secret")
            data = msgspec.json.encode(body)
            ts = int(self._clock())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "derrick-alerts",
                "X-Derrick-Event": event,
                "X-Derrick-Delivery": str(delivery_id),
                TIMESTAMP_HEADER: str(ts),
                SIGNATURE_HEADER: sign(secret, ts, data),
            }
            await asyncio.to_thread(_post_webhook, address, data, headers, timeout)
            return
        if self._smtp is None:
            raise DeliveryError("e-mail target but no [smtp] configured")
        await asyncio.to_thread(_send_mail, self._smtp, self._smtp_password, address, body, timeout)

    async def deliver_due(self, limit: int = 20) -> int:
        """Deliver the due rows (one attempt each); the number attempted."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(_DUE, (limit,))).fetchall()
            for did, attempts, event, body, kind, address, secret in rows:
                try:
                    await self._deliver(int(did), event, body, (kind, address, secret))
                except DeliveryError as exc:
                    tries = int(attempts) + 1
                    dead = tries >= self._settings.max_attempts
                    await conn.execute(
                        "UPDATE notification_deliveries SET attempts = %s, last_error = %s, "
                        "state = %s, next_attempt_at = clock_timestamp() + %s * interval '1 s' "
                        "WHERE id = %s",
                        (
                            tries,
                            str(exc)[:500],
                            "dead" if dead else "pending",
                            backoff_s(self._settings, tries),
                            did,
                        ),
                    )
                    if dead:
                        log.warning(
                            "notification %s dead-lettered after %d attempts: %s", did, tries, exc
                        )
                    else:
                        log.info("notification %s attempt %d failed: %s", did, tries, exc)
                    continue
                await conn.execute(
                    "UPDATE notification_deliveries SET attempts = attempts + 1, "
                    "state = 'delivered', delivered_at = clock_timestamp(), last_error = NULL "
                    "WHERE id = %s",
                    (did,),
                )
                log.info("notification %s (%s) delivered by %s", did, event, kind)
        return len(rows)

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            if not await self.deliver_due():
                await asyncio.sleep(self._settings.poll_interval_ms / 1000)
