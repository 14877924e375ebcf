"""MQTT credentials of appliances, rendered for the brokers (pure).

One credential per provisioned appliance: username = appliance id, a random password shown
once, stored as PBKDF2-HMAC-SHA512 (salt, iterations, 64-byte derived key). The same stored
values render as:

- a **Mosquitto** password-file line, ``user:$7$<iterations>$<b64 salt>$<b64 key>`` (the
  PBKDF2-SHA512 format of ``mosquitto_passwd`` in Mosquitto 2.x), and an ``acl_file`` block
  letting the node publish only its own births, data and deaths
  (``spBv1.0/<site>/{NBIRTH,NDATA,NDEATH}/<node>``, ``.../{DBIRTH,DDATA,DDEATH}/<node>/+``)
  and read only its own commands and the Primary Host's ``spBv1.0/STATE/+``. Cloud service
  accounts get the rules of their :class:`ServiceRole` (Primary Host, reader, site gateway);
- an **EMQX** 5 built-in-database user for ``import_users`` (JSON: ``user_id``,
  ``password_hash`` as lowercase hex, ``salt``, ``is_superuser``), for an authenticator with
  ``password_hash_algorithm {name = pbkdf2, mac_fun = sha512, iterations = <n>,
  dk_length = 64}``, and EMQX file-authorization rules (``acl.conf`` Erlang terms) with the
  same topics.

The salt is 12 ASCII characters: Mosquitto 2.0 reads exactly 12 salt bytes (base64 in the
file) and EMQX feeds the salt string's bytes to PBKDF2, so both see the same bytes.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from typing import Final

import msgspec

from core.ids import check_appliance_id, site_of
from core.sparkplug import NAMESPACE

ITERATIONS: Final = 1000  # the password is 256 random bits: stretching adds little
DK_LENGTH: Final = 64


class BrokerCredential(msgspec.Struct, frozen=True):
    """What the registry stores: never the password."""

    username: str
    salt: str
    iterations: int
    dk_sha512: bytes


class IssuedPassword(msgspec.Struct, frozen=True):
    """A new credential and its password, shown once."""

    credential: BrokerCredential
    password: str

    def __repr__(self) -> str:
        return f"IssuedPassword(username={self.credential.username!r}, password=<hidden>)"


def derive(password: str, salt: str, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt.encode(), iterations, DK_LENGTH)


def issue(appliance_id: str, iterations: int = ITERATIONS) -> IssuedPassword:
    """A fresh random password for ``appliance_id`` and its stored form."""
    check_appliance_id(appliance_id)
    return issue_for(appliance_id, iterations)


def issue_for(username: str, iterations: int = ITERATIONS) -> IssuedPassword:
    """A fresh random password for any broker username (service accounts too)."""
    password = secrets.token_urlsafe(32)
    salt = secrets.token_urlsafe(9)  # 12 ASCII bytes: Mosquitto 2.0 expects a 12-byte salt
    credential = BrokerCredential(username, salt, iterations, derive(password, salt, iterations))
    return IssuedPassword(credential, password)


def verify(credential: BrokerCredential, password: str) -> bool:
    got = derive(password, credential.salt, credential.iterations)
    return hmac.compare_digest(got, credential.dk_sha512)


class ServiceRole(enum.StrEnum):
    """What a cloud service account may do on the broker."""

    #: Ingest workers: the Sparkplug Primary Host. Reads the whole namespace, publishes STATE,
    #: NCMD/DCMD (acknowledgements, rebirth requests) and its own KPI edge node's topics.
    PRIMARY_HOST = "primary_host"
    #: Read-only consumers (the API's live feed).
    READER = "reader"
    #: A site gateway's bridge: carries its site's node topics up and commands + STATE down.
    SITE_GATEWAY = "site_gateway"


class ServiceAccount(msgspec.Struct, frozen=True):
    username: str
    role: ServiceRole = ServiceRole.PRIMARY_HOST
    #: The site a SITE_GATEWAY serves (None for the other roles).
    site: str | None = None


#: Group of the ingest workers' KPI edge nodes (``[kpi] group_id`` in ingest's config).
KPI_GROUP: Final = "derrick-cloud"
STATE_FILTER: Final = f"{NAMESPACE}/STATE/+"


class TopicRule(msgspec.Struct, frozen=True):
    access: str  # "read" (subscribe/receive) or "write" (publish)
    topic: str


def node_rules(appliance_id: str) -> list[TopicRule]:
    """An appliance publishes only its own node and device topics (births, data, deaths:
    never commands), and reads only its own commands and the Primary Host's STATE."""
    site = site_of(appliance_id)
    node = f"{NAMESPACE}/{site}/{{}}/{appliance_id}"
    rules = [TopicRule("write", node.format(t)) for t in ("NBIRTH", "NDATA", "NDEATH")]
    rules += [TopicRule("write", node.format(t) + "/+") for t in ("DBIRTH", "DDATA", "DDEATH")]
    rules += [
        TopicRule("read", node.format("NCMD")),
        TopicRule("read", node.format("DCMD") + "/+"),
        TopicRule("read", STATE_FILTER),
    ]
    return rules


def service_rules(account: ServiceAccount) -> list[TopicRule]:
    match account.role:
        case ServiceRole.PRIMARY_HOST:
            return [
                TopicRule("read", f"{NAMESPACE}/#"),
                TopicRule("write", STATE_FILTER),
                TopicRule("write", f"{NAMESPACE}/+/NCMD/+"),
                TopicRule("write", f"{NAMESPACE}/+/DCMD/+/+"),
                TopicRule("write", f"{NAMESPACE}/{KPI_GROUP}/#"),
            ]
        case ServiceRole.READER:
            return [TopicRule("read", f"{NAMESPACE}/#")]
        case ServiceRole.SITE_GATEWAY:
            if account.site is None:
                raise ValueError(f"site gateway account {account.username!r} has no site")
            site = f"{NAMESPACE}/{account.site}"
            rules = [TopicRule("write", f"{site}/{t}/+") for t in ("NBIRTH", "NDATA", "NDEATH")]
            rules += [TopicRule("write", f"{site}/{t}/+/+") for t in ("DBIRTH", "DDATA", "DDEATH")]
            return [
                *rules,
                TopicRule("read", f"{site}/NCMD/+"),
                TopicRule("read", f"{site}/DCMD/+/+"),
                TopicRule("read", STATE_FILTER),
            ]


# -- Mosquitto ------------------------------------------------------------------------------


def mosquitto_password_line(c: BrokerCredential) -> str:
    salt = base64.b64encode(c.salt.encode()).decode()
    key = base64.b64encode(c.dk_sha512).decode()
    return f"{c.username}:$7${c.iterations}${salt}${key}"


def mosquitto_password_file(
    credentials: Iterable[BrokerCredential], services: Iterable[BrokerCredential] = ()
) -> str:
    """A whole password file: appliances plus service accounts (ingest, api)."""
    lines = [mosquitto_password_line(c) for c in (*services, *credentials)]
    return "".join(f"{line}\n" for line in lines)


def _as_accounts(services: Iterable[ServiceAccount | str]) -> list[ServiceAccount]:
    return [s if isinstance(s, ServiceAccount) else ServiceAccount(s) for s in services]


def mosquitto_acl_file(
    appliances: Iterable[str], services: Iterable[ServiceAccount | str] = ()
) -> str:
    """``acl_file`` content: each appliance confined to its own topics, each service account
    to its role (a bare name is a Primary Host). Anything not listed is denied."""
    out = ["# Generated by `python -m api broker-files`: do not edit.", ""]
    for account in _as_accounts(services):
        out.append(f"user {account.username}")
        out += [f"topic {r.access} {r.topic}" for r in service_rules(account)]
        out.append("")
    for appliance in appliances:
        out.append(f"user {appliance}")
        out += [f"topic {r.access} {r.topic}" for r in node_rules(appliance)]
        out.append("")
    return "\n".join(out)


# -- EMQX -----------------------------------------------------------------------------------


def emqx_users_json(credentials: Iterable[BrokerCredential]) -> str:
    """Users for EMQX's ``POST /api/v5/authentication/password_based:built_in_database/
    import_users`` (a ``.json`` file); the authenticator must use pbkdf2/sha512/64 bytes and
    the iterations stored here."""
    users = [
        {
            "user_id": c.username,
            "password_hash": c.dk_sha512.hex(),
            "salt": c.salt,
            "is_superuser": False,
        }
        for c in credentials
    ]
    return json.dumps(users, indent=2) + "\n"


def _emqx_rules(username: str, rules: list[TopicRule]) -> list[str]:
    out = []
    for access, action in (("write", "publish"), ("read", "subscribe")):
        topics = ", ".join(f'"{r.topic}"' for r in rules if r.access == access)
        if topics:
            out.append(f'{{allow, {{username, "{username}"}}, {action}, [{topics}]}}.')
    return out


def emqx_acl_conf(appliances: Iterable[str], services: Iterable[ServiceAccount | str] = ()) -> str:
    """EMQX file authorization rules (``acl.conf``), the same rules as Mosquitto's; the final
    rule denies everything else."""
    out = ["%% Generated by `python -m api broker-files`: do not edit."]
    for account in _as_accounts(services):
        out += _emqx_rules(account.username, service_rules(account))
    for appliance in appliances:
        out += _emqx_rules(appliance, node_rules(appliance))
    out.append("{deny, all}.")
    return "\n".join(out) + "\n"
