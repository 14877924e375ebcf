"""A Mosquitto broker on a free loopback port, configured from ``broker/mosquitto/``."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import string
import struct
from collections.abc import Sequence
from pathlib import Path

from harness import locate
from harness.errors import ServiceNotRunningError
from harness.ports import allocate_port, is_listening
from harness.service import Service
from harness.tls import ScratchPki

TEMPLATE = Path(__file__).resolve().parent.parent / "broker" / "mosquitto" / "dev.conf.template"

_CONNACK = 0x20
_DEFAULT_LOG_TYPES = ("error", "warning", "notice", "information")


def _mqtt_probe(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send an MQTT 3.1.1 CONNECT and return True on any CONNACK."""
    client_id = f"derrick-harness-probe-{os.getpid()}".encode()
    variable_header = b"\x00\x04MQTT\x04\x02\x00\x0a"  # level 4, clean session, keepalive 10
    payload = struct.pack("!H", len(client_id)) + client_id
    remaining = len(variable_header) + len(payload)
    connect = bytes([0x10, remaining]) + variable_header + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(connect)
        reply = sock.recv(4)
        if len(reply) >= 2 and reply[0] == _CONNACK:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return True
    return False


class Mosquitto(Service):
    """A Mosquitto broker for development and tests.

    ``insecure_allow_anonymous`` (default True) lets any local client connect without
    credentials; turn it off and pass ``password_file`` to require a login. ``acl_file``
    (optional) limits what each user may publish and subscribe to. ``verbose`` logs every
    packet (``log_type all``). :meth:`reload` (SIGHUP) rereads both files.

    ``tls`` (a :class:`~harness.tls.ScratchPki`) adds a second loopback listener on
    :attr:`tls_port` serving the PKI's server certificate; ``require_client_certificate``
    makes that listener demand a client certificate signed by the same CA. Credentials and
    ACLs apply to both listeners (``per_listener_settings false``).

    ``extra_bind_addresses`` (default none) makes the plain listener also bind these local
    addresses on the same :attr:`port`, with the same settings: for clients that cannot reach
    the loopback, such as agents in a test's network namespace reaching the broker through a
    veth pair. The loopback listener and :attr:`url` stay as they are.
    """

    name = "mosquitto"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        insecure_allow_anonymous: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        verbose: bool = False,
        tls: ScratchPki | None = None,
        require_client_certificate: bool = False,
        extra_bind_addresses: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        if not insecure_allow_anonymous and password_file is None:
            raise ValueError("without insecure_allow_anonymous a password_file is required")
        super().__init__(base_dir, startup_timeout=startup_timeout, stop_timeout=10.0)
        self.insecure_allow_anonymous = insecure_allow_anonymous
        self.password_file = password_file
        self.acl_file = acl_file
        self.verbose = verbose
        self.tls = tls
        self.require_client_certificate = require_client_certificate
        self.extra_bind_addresses = tuple(extra_bind_addresses)
        self._binary = locate.mosquitto_binary()
        self._port = 0
        self._tls_port = 0

    def __repr__(self) -> str:
        port = self._port or "unassigned"
        return f"<Mosquitto {self.host}:{port} pid={self.pid} dir={self.base_dir}>"

    @property
    def port(self) -> int:
        self._require_ports()
        return self._port

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (only with ``tls``)."""
        if self.tls is None:
            raise ValueError("this broker has no TLS listener (pass tls=...)")
        self._require_ports()
        return self._tls_port

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "mosquitto.log"

    def _log_files(self) -> list[Path]:
        return [self.output_path, self.log_path]

    def _assign_ports(self) -> None:
        self._port = allocate_port()
        if self.tls is not None:
            self._tls_port = allocate_port()

    def _tls_listener(self) -> str:
        if self.tls is None:
            return ""
        return "\n".join(
            [
                f"listener {self._tls_port} 127.0.0.1",
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server.cert}",
                f"keyfile {self.tls.server.key}",
                "tls_version tlsv1.2",
                f"require_certificate {'true' if self.require_client_certificate else 'false'}",
            ]
        )

    def render_config(self) -> str:
        """The broker configuration for the current port and options."""
        template = string.Template(TEMPLATE.read_text(encoding="utf-8"))
        log_types = ("all",) if self.verbose else _DEFAULT_LOG_TYPES
        password_line = f"password_file {self.password_file}" if self.password_file else ""
        return template.substitute(
            user=getpass.getuser(),
            port=self._port,
            allow_anonymous="true" if self.insecure_allow_anonymous else "false",
            password_file_line=password_line,
            acl_file_line=f"acl_file {self.acl_file}" if self.acl_file else "",
            extra_listeners="\n".join(
                f"listener {self._port} {address}" for address in self.extra_bind_addresses
            ),
            tls_listener=self._tls_listener(),
            log_path=self.log_path,
            log_types="\n".join(f"log_type {kind}" for kind in log_types),
        )

    def reload(self) -> None:
        """Make the broker reread its password and ACL files (SIGHUP)."""
        if self.pid is None:
            raise ServiceNotRunningError("mosquitto is not running")
        os.kill(self.pid, signal.SIGHUP)

    def _prepare(self) -> None:
        self.config_path.write_text(self.render_config(), encoding="utf-8")

    def _command(self) -> Sequence[str]:
        return [str(self._binary), "-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        plain = _mqtt_probe(self.host, self._port)
        extra = all(is_listening(self._port, address) for address in self.extra_bind_addresses)
        return plain and extra and (self.tls is None or is_listening(self._tls_port))
