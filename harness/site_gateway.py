"""A site gateway Mosquitto (``broker/mosquitto/site-gateway.conf.template``) on loopback:
appliances connect to :attr:`port` with per-node credentials; one TLS bridge carries the site
to a cloud broker at ``cloud_port`` (a :class:`~harness.mosquitto.Mosquitto` TLS listener, or
a :class:`~harness.proxy.ProxyProcess` in front of it to cut the link)."""

from __future__ import annotations

import getpass
import os
import string
from pathlib import Path

from harness.mosquitto import Mosquitto
from harness.tls import CertKey

TEMPLATE = (
    Path(__file__).resolve().parent.parent / "broker" / "mosquitto" / "site-gateway.conf.template"
)


class SiteGateway(Mosquitto):
    """The site's broker with its bridge to the cloud; the bridge password stays in the
    rendered file (mode 0600), never in a repr or log."""

    name = "site-gateway"

    def __init__(
        self,
        base_dir: Path,
        *,
        site: str,
        cloud_port: int,
        cloud_ca: Path,
        remote_username: str,
        remote_password: str,
        password_file: Path,
        acl_file: Path,
        client_cert: CertKey | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            base_dir,
            insecure_allow_anonymous=False,
            password_file=password_file,
            acl_file=acl_file,
            startup_timeout=startup_timeout,
        )
        self.site = site
        self.cloud_port = cloud_port
        self.cloud_ca = cloud_ca
        self.remote_username = remote_username
        self._remote_password = remote_password
        self.client_cert = client_cert

    def __repr__(self) -> str:
        return f"<SiteGateway {self.site} pid={self.pid} dir={self.base_dir}>"

    @property
    def bridge_clientid(self) -> str:
        return f"gw-{self.site}"

    def render_config(self) -> str:
        template = string.Template(TEMPLATE.read_text(encoding="utf-8"))
        cert = self.client_cert
        cert_lines = f"bridge_certfile {cert.cert}\nbridge_keyfile {cert.key}" if cert else ""
        return template.substitute(
            user=getpass.getuser(),
            port=self.port,
            listen_address=self.host,
            local_tls="",
            password_file=self.password_file,
            acl_file=self.acl_file,
            persistence_dir=self.base_dir,
            log_path=self.log_path,
            cloud_address=f"127.0.0.1:{self.cloud_port}",
            bridge_clientid=self.bridge_clientid,
            remote_username=self.remote_username,
            remote_password=self._remote_password,
            bridge_cafile=self.cloud_ca,
            bridge_client_cert=cert_lines,
            group=self.site,
        )

    def _prepare(self) -> None:
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.render_config())
