"""What EMQX would ask the registry, checked on real PostgreSQL without running EMQX.

- The SQL queries in ``broker/emqx/emqx.conf`` run as written against the migrated registry
  (``${username}`` bound as a parameter, as EMQX does).
- Authentication: PBKDF2-HMAC-SHA512 of each issued password with the row's salt and the
  iterations configured in emqx.conf equals the row's ``password_hash`` (what EMQX's pbkdf2
  authenticator computes); retired appliances and strangers have no row.
- Authorization: the ``mqtt_acl`` view gives every user exactly the rules that
  ``api.broker_auth`` renders for Mosquitto (tested on the real broker in
  test_broker_security.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from api import broker_auth, migrate, registry
from api.broker_auth import ServiceAccount, ServiceRole
from harness import Postgres

pytestmark = [pytest.mark.integration]

EMQX_CONF = Path(__file__).resolve().parents[2] / "broker" / "emqx" / "emqx.conf"


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


def _conf_queries() -> tuple[str, str]:
    text = EMQX_CONF.read_text(encoding="utf-8")
    queries = re.findall(r'^\s*query = "(.*)"\s*$', text, flags=re.M)
    assert len(queries) == 2, queries
    authn, authz = (q.replace("${username}", "%s") for q in queries)
    return authn, authz


def _conf_iterations() -> int:
    text = EMQX_CONF.read_text(encoding="utf-8")
    found = re.findall(r"name = pbkdf2, mac_fun = sha512, iterations = (\d+), dk_length = 64", text)
    assert len(found) == 1, found
    return int(found[0])


def test_emqx_conf_is_balanced_and_has_no_plaintext_listener() -> None:
    text = re.sub(r'"[^"]*"', '""', EMQX_CONF.read_text(encoding="utf-8"))
    text = "\n".join(line.split("#")[0] for line in text.splitlines())
    for open_, close in ("{}", "[]"):
        assert text.count(open_) == text.count(close), f"unbalanced {open_}{close}"
    assert "listeners.tcp.default { enable = false }" in text
    assert _conf_iterations() == broker_auth.ITERATIONS


def test_registry_answers_emqx_authn_and_authz_like_mosquitto(reg: psycopg.Connection) -> None:
    authn, authz = _conf_queries()
    registry.create_tenant(reg, "acme", "Acme")
    for site in ("s301", "s302"):
        registry.create_site(reg, site, "acme")
    appliances = ["s301-a001", "s301-a002", "s302-a001"]
    passwords = {a: registry.provision(reg, a).password for a in appliances}
    services = [
        ServiceAccount("ingest-w0"),
        ServiceAccount("api-live", ServiceRole.READER),
        ServiceAccount("gw-s301", ServiceRole.SITE_GATEWAY, "s301"),
    ]
    for s in services:
        passwords[s.username] = registry.create_service_account(
            reg, s.username, s.role, s.site
        ).password
    registry.retire(reg, "s302-a001")
    appliances.remove("s302-a001")

    iterations = _conf_iterations()
    for user in [*appliances, *(s.username for s in services)]:
        rows = reg.execute(authn, (user,)).fetchall()
        assert len(rows) == 1, user
        password_hash, salt = rows[0]
        derived = hashlib.pbkdf2_hmac("sha512", passwords[user].encode(), salt.encode(), iterations)
        assert derived.hex() == password_hash, user
        assert hashlib.pbkdf2_hmac("sha512", b"wrong", salt.encode(), iterations).hex() != (
            password_hash
        )
    for nobody in ("s302-a001", "intruder", "' OR 1=1 --"):
        assert reg.execute(authn, (nobody,)).fetchall() == [], nobody

    expected: dict[str, set[tuple[str, str]]] = {}
    action = {"write": "publish", "read": "subscribe"}
    for a in appliances:
        expected[a] = {(action[r.access], r.topic) for r in broker_auth.node_rules(a)}
    for s in services:
        expected[s.username] = {(action[r.access], r.topic) for r in broker_auth.service_rules(s)}
    for user, want in expected.items():
        rows = reg.execute(authz, (user,)).fetchall()
        assert {p for p, _, _ in rows} == {"allow"}, user
        assert {(act, topic) for _, act, topic in rows} == want, user
        assert len(rows) == len(want), f"{user}: duplicate rules"
    assert reg.execute(authz, ("s302-a001",)).fetchall() == []
