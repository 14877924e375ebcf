"""Inventory plugin ``derrick_registry``: the fleet's appliances from the Derrick registry.

Reads the appliance registry (a JSON export, or the ops API's ``/v1/sites`` and
``/v1/sites/{id}``) and builds one group per site under ``appliances``, one per environment
and one per registry state. Retired appliances are never in the inventory.

Errors: every bad input (unreadable or malformed export, invalid id, an appliance whose id
does not belong to its site, a refused or failed API call) raises ``AnsibleParserError``
naming the file or URL and the entry; the API key never appears in a message, a variable or
the inventory output.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: derrick_registry
short_description: Derrick appliances from the registry (JSON export or the ops API)
description:
  - Builds the fleet inventory from the Derrick appliance registry, one group per site
    (C(s017)) as children of C(appliances), one group per environment (O(environment)) and one
    per registry state (C(state_provisioned), C(state_discovered)).
  - Retired appliances are always left out. Appliance ids are checked
    (C(s[0-9]{3,}-a[0-9]{3,}), the site is the id's prefix); a bad export or API answer fails
    the inventory with a message naming the file or URL and the entry.
  - Sets C(derrick_site), C(derrick_appliance_state), C(derrick_environment) and, when known,
    C(ansible_host) on every host, plus the entry's own C(vars) (file export).
  - The configuration file must end in C(.derrick_registry.yml) or C(.derrick_registry.yaml).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks this file as a configuration of this plugin.
    required: true
    choices: [derrick_registry]
  environment:
    description: The environment these appliances belong to (its group name).
    type: str
    required: true
    choices: [production, staging, lab]
  source:
    description: Where the registry is read from.
    type: str
    default: file
    choices: [file, api]
  export_path:
    description:
      - The JSON export (O(source=file)); a relative path is relative to this configuration
        file's directory.
      - 'Format: C({"sites": [{"id": "s017", "name": "..."}], "appliances": [{"id": "s017-a001",
        "site": "s017", "state": "provisioned", "address": "10.17.0.11", "vars": {}}]}); C(address)
        or C(ansible_host) (not both) and C(vars) are optional.'
      - Keep it outside the inventory directory (Ansible would read it as an inventory).
    type: str
    env:
      - name: DERRICK_REGISTRY_EXPORT
  api_url:
    description: Base URL of the Derrick API (O(source=api)), e.g. C(https://api.example.net).
    type: str
    env:
      - name: DERRICK_REGISTRY_API_URL
  api_key:
    description:
      - An ops API key (O(source=api)). Give it in the environment, or as an inline
        C(!vault) value in this file; never in plain text. Never logged, never in the
        inventory.
    type: str
    env:
      - name: DERRICK_API_KEY
  allow_plain_http:
    description: Accept an C(http://) O(api_url) (the key then travels in clear; tests only).
    type: bool
    default: false
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds each API request may take.
    type: int
    default: 30
  sites:
    description:
      - Only these sites (default all the registry has or the key may see). With the API
        source only these sites are fetched, which keeps a technician's run short.
      - The environment variable takes a comma-separated list.
    type: list
    elements: str
    default: []
    env:
      - name: DERRICK_INVENTORY_SITES
  states:
    description: Registry states included (C(retired) is never included).
    type: list
    elements: str
    default: [discovered, provisioned]
    choices: [discovered, provisioned]
  address_template:
    description:
      - C(ansible_host) of an appliance without an explicit address, from C({appliance}) and
        C({site}), e.g. C({appliance}.{site}.fleet.example.net). Empty, the host name is used.
    type: str
    default: ""
"""

EXAMPLES = r"""
# inventories/lab/registry.derrick_registry.yml
plugin: derrick_registry
environment: lab
source: file
export_path: registry-export.json

# inventories/production/registry.derrick_registry.yml (key in DERRICK_API_KEY)
plugin: derrick_registry
environment: production
source: api
api_url: https://api.example.net
address_template: "{appliance}.{site}.fleet.example.net"
"""

import os
import re
import string
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit

import msgspec
from ansible.errors import AnsibleParserError
from ansible.module_utils.urls import open_url
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

SITE_ID = re.compile(r"s[0-9]{3,}")
APPLIANCE_ID = re.compile(r"(s[0-9]{3,})-a[0-9]{3,}")
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Variables the plugin sets itself; an export's ``vars`` may not set them.
OWN_VARS = frozenset(
    {"derrick_site", "derrick_appliance_state", "derrick_environment", "ansible_host"}
)
#: 429 answers waited out (Retry-After) before giving up, and the longest wait.
RETRIES_429 = 5
MAX_RETRY_AFTER_S = 30.0

State = Literal["discovered", "provisioned", "retired"]


# -- the export's schema ---------------------------------------------------------------------


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class SiteEntry(_Strict):
    id: str
    name: str = ""
    timezone: str = "UTC"


class ApplianceEntry(_Strict):
    id: str
    site: str
    state: State
    address: str | None = None
    ansible_host: str | None = None
    vars: dict[str, Any] = msgspec.field(default_factory=dict)


class RegistryExport(_Strict):
    sites: list[SiteEntry]
    appliances: list[ApplianceEntry]
    version: Literal[1] = 1


# -- the API's answers (new fields are ignored) ----------------------------------------------


class ApiAppliance(msgspec.Struct, frozen=True):
    id: str
    state: State


class ApiSite(msgspec.Struct, frozen=True):
    id: str
    name: str = ""
    appliances: list[ApiAppliance] | None = None


class Appliance(msgspec.Struct, frozen=True):
    """One appliance of the inventory, checked."""

    id: str
    site: str
    state: State
    address: str | None
    vars: dict[str, Any]


def check_appliance(where: str, entry: ApplianceEntry) -> Appliance:
    """The entry as an :class:`Appliance`, or AnsibleParserError naming ``where``."""
    m = APPLIANCE_ID.fullmatch(entry.id)
    if m is None:
        raise AnsibleParserError(f"{where}: appliance id {entry.id!r} is not s<NNN>-a<NNN>")
    if m.group(1) != entry.site:
        raise AnsibleParserError(
            f"{where}: appliance {entry.id} is listed under site {entry.site!r}, "
            f"its id says {m.group(1)}"
        )
    if entry.address is not None and entry.ansible_host is not None:
        raise AnsibleParserError(f"{where}: {entry.id} has both address and ansible_host")
    for name in entry.vars:
        if not VAR_NAME.fullmatch(name) or name in OWN_VARS:
            raise AnsibleParserError(f"{where}: {entry.id}: variable name {name!r} not allowed")
    address = entry.address if entry.address is not None else entry.ansible_host
    return Appliance(entry.id, entry.site, entry.state, address, dict(entry.vars))


def appliances_from_export(path: str, data: bytes) -> list[Appliance]:
    """Every appliance of a JSON export, checked (retired ones included)."""
    try:
        export = msgspec.json.decode(data, type=RegistryExport)
    except msgspec.DecodeError as exc:  # a ValidationError says where: $.appliances[3].id
        raise AnsibleParserError(f"{path}: not a registry export: {exc}") from None
    sites: set[str] = set()
    for i, site in enumerate(export.sites):
        if not SITE_ID.fullmatch(site.id) or site.id in sites:
            raise AnsibleParserError(f"{path}: sites[{i}]: site id {site.id!r} invalid or repeated")
        sites.add(site.id)
    out: list[Appliance] = []
    seen: set[str] = set()
    for i, entry in enumerate(export.appliances):
        where = f"{path}: appliances[{i}]"
        appliance = check_appliance(where, entry)
        if appliance.site not in sites:
            raise AnsibleParserError(f"{where}: {entry.id}: site {entry.site} is not in sites")
        if appliance.id in seen:
            raise AnsibleParserError(f"{where}: appliance {entry.id} appears twice")
        seen.add(appliance.id)
        out.append(appliance)
    return out


class RegistryApi:
    """The ops API's registry routes; the key is sent as a Bearer token and kept nowhere else."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: int,
        validate_certs: bool,
        on_wait: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._timeout = timeout
        self._validate_certs = validate_certs
        self._on_wait = on_wait

    def __repr__(self) -> str:
        return f"RegistryApi({self.base_url!r}, key=<hidden>)"

    def _get(self, path: str) -> bytes:
        url = self.base_url + path
        for _ in range(RETRIES_429 + 1):
            try:
                with open_url(
                    url,
                    headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json"},
                    timeout=self._timeout,
                    validate_certs=self._validate_certs,
                    follow_redirects="none",  # never carry the key to another address
                    use_netrc=False,
                    use_proxy=True,
                ) as response:
                    body: bytes = response.read()
                    return body
            except HTTPError as exc:
                if exc.code == 429:
                    wait = _retry_after(exc.headers.get("Retry-After"))
                    self._on_wait(f"{url}: rate limited (429), waiting {wait:g} s")
                    time.sleep(wait)
                    continue
                raise AnsibleParserError(_refusal(url, exc)) from None
            except (URLError, OSError) as exc:
                reason = exc.reason if isinstance(exc, URLError) else exc
                raise AnsibleParserError(f"{url}: cannot reach the API: {reason}") from None
        raise AnsibleParserError(f"{url}: still rate limited (429) after {RETRIES_429} waits")

    def sites(self) -> list[str]:
        data = self._get("/v1/sites")
        try:
            return [s.id for s in msgspec.json.decode(data, type=list[ApiSite])]
        except msgspec.DecodeError as exc:
            raise AnsibleParserError(
                f"{self.base_url}/v1/sites: unexpected answer: {exc}"
            ) from None

    def appliances(self, site: str) -> list[Appliance]:
        path = f"/v1/sites/{quote(site, safe='')}"
        try:
            doc = msgspec.json.decode(self._get(path), type=ApiSite)
        except msgspec.DecodeError as exc:
            raise AnsibleParserError(f"{self.base_url}{path}: unexpected answer: {exc}") from None
        where = f"{self.base_url}{path}"
        return [
            check_appliance(where, ApplianceEntry(a.id, site, a.state))
            for a in doc.appliances or []
        ]


def _retry_after(header: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.1, float(header or 1)))
    except ValueError:
        return 1.0


def _refusal(url: str, exc: HTTPError) -> str:
    if exc.code in (401, 403):
        return f"{url}: the API refused the key ({exc.code}): set an ops key in DERRICK_API_KEY"
    if exc.code == 404:
        return f"{url}: not found (404): no such site, or the key may not see it"
    return f"{url}: the API answered {exc.code} {exc.reason}"


def check_address_template(template: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if not fields <= {"appliance", "site"}:
        raise AnsibleParserError(
            f"address_template {template!r}: only {{appliance}} and {{site}} may be used"
        )


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "derrick_registry"

    def verify_file(self, path: str) -> bool:
        return bool(super().verify_file(path)) and path.endswith(
            (".derrick_registry.yml", ".derrick_registry.yaml")
        )

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        template = str(self.get_option("address_template") or "")  # data, not a template
        check_address_template(template)
        wanted = self._wanted_sites(path)
        states = set(self.get_option("states"))
        if self.get_option("source") == "api":
            appliances = self._from_api(path, wanted)
        else:
            appliances = self._from_file(path)
        environment = self.get_option("environment")
        self.inventory.add_group("appliances")
        self.inventory.add_group(environment)
        for appliance in sorted(appliances, key=lambda a: a.id):
            if appliance.state == "retired" or appliance.state not in states:
                continue
            if wanted and appliance.site not in wanted:
                continue
            self._add(appliance, environment, template)

    def _wanted_sites(self, path: str) -> set[str]:
        wanted: set[str] = set()
        for item in self.get_option("sites") or []:
            for site in filter(None, (s.strip() for s in str(item).split(","))):
                if not SITE_ID.fullmatch(site):
                    raise AnsibleParserError(f"{path}: sites: {site!r} is not a site id")
                wanted.add(site)
        return wanted

    def _from_file(self, path: str) -> list[Appliance]:
        export = self.get_option("export_path")
        if not export:
            raise AnsibleParserError(f"{path}: source file needs export_path")
        here = os.path.dirname(os.path.abspath(path))
        export = os.path.normpath(os.path.join(here, os.path.expanduser(export)))
        try:
            with open(export, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise AnsibleParserError(f"{export}: cannot read the export: {exc.strerror}") from None
        return appliances_from_export(export, data)

    def _from_api(self, path: str, wanted: set[str]) -> list[Appliance]:
        url = self.get_option("api_url")
        key = self.get_option("api_key")
        if not url:
            raise AnsibleParserError(
                f"{path}: source api needs api_url (or DERRICK_REGISTRY_API_URL)"
            )
        if not key:
            raise AnsibleParserError(f"{path}: source api needs a key: set DERRICK_API_KEY")
        scheme = urlsplit(url).scheme
        if scheme != "https" and not (scheme == "http" and self.get_option("allow_plain_http")):
            raise AnsibleParserError(
                f"{path}: api_url {url!r} must be https:// (allow_plain_http: true for tests)"
            )
        api = RegistryApi(
            url,
            str(key),  # str() decrypts an inline !vault value
            timeout=self.get_option("timeout"),
            validate_certs=self.get_option("validate_certs"),
            on_wait=lambda msg: self.display.vvv(f"derrick_registry: {msg}"),
        )
        sites = sorted(wanted) if wanted else api.sites()
        return [a for site in sites for a in api.appliances(site)]

    def _add(self, appliance: Appliance, environment: str, template: str) -> None:
        host = appliance.id
        self.inventory.add_group(appliance.site)
        self.inventory.add_child("appliances", appliance.site)
        self.inventory.add_host(host, group=appliance.site)
        self.inventory.add_child(environment, host)
        state_group = self.inventory.add_group(f"state_{appliance.state}")
        self.inventory.add_child(state_group, host)
        address = appliance.address
        if address is None and template:
            address = template.format(appliance=appliance.id, site=appliance.site)
        hostvars: dict[str, Any] = {
            "derrick_site": appliance.site,
            "derrick_appliance_state": appliance.state,
            "derrick_environment": environment,
            **appliance.vars,
        }
        if address is not None:
            hostvars["ansible_host"] = address
        for name, value in hostvars.items():
            self.inventory.set_variable(host, name, value)
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
        self._add_host_to_keyed_groups(
            self.get_option("keyed_groups"), hostvars, host, strict=strict
        )
