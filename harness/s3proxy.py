"""An S3-compatible server (S3Proxy on a local directory) on a free loopback port.

For the cold path's ``s3://`` archive: the same pyarrow S3 filesystem code as production,
talking AWS Signature V4 over HTTP to a real server. Credentials are random per instance and
never logged (``repr`` leaves them out).
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from harness import locate
from harness.ports import allocate_port
from harness.service import Service


class S3Proxy(Service):
    """A throwaway S3 endpoint; buckets are directories under ``base_dir/data``."""

    name = "s3proxy"

    def __init__(self, base_dir: Path | None = None, *, startup_timeout: float = 60.0) -> None:
        super().__init__(base_dir, startup_timeout=startup_timeout, stop_timeout=15.0)
        self._java = locate.java_binary(17)
        self._jar = locate.s3proxy_jar()
        self.port = 0
        self.access_key = "derrick-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.region = "us-east-1"

    def __repr__(self) -> str:
        return f"<S3Proxy {self.endpoint if self.port else 'unassigned'} pid={self.pid}>"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _assign_ports(self) -> None:
        self.port = allocate_port()

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.base_dir / "s3proxy.properties"
        conf.write_text(
            f"s3proxy.endpoint={self.endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.access_key}\n"
            f"s3proxy.credential={self.secret_key}\n"
            "jclouds.provider=filesystem\n"
            f"jclouds.filesystem.basedir={self.data_dir}\n"
        )
        conf.chmod(0o600)

    def _command(self) -> Sequence[str]:
        return [str(self._java), "-Xmx256m", "-jar", str(self._jar),
                "--properties", str(self.base_dir / "s3proxy.properties")]  # fmt: skip

    def _is_ready(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=2)  # noqa: S310 (loopback)
        except urllib.error.HTTPError:
            return True  # answering (403 without credentials) is ready
        return True

    def make_bucket(self, name: str) -> None:
        """Create a bucket (a directory, as S3Proxy's filesystem provider keeps them)."""
        (self.data_dir / name).mkdir()
