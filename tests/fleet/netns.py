"""Appliances behind real SSH: a network namespace per appliance, a veth pair to it, an sshd
in it with its own host key.

:func:`namespaces` creates ``count`` namespaces named ``derrick-<pid>-<n>``; namespace ``n``
gets the /30 ``10.213.X.4n`` (``.4n+1`` on the test's side of the veth pair, ``.4n+2`` inside),
``X`` starting from the test's pid and skipping any /24 a local interface already uses. On
exit every process still in a namespace (sessions of its sshd, agents started through them)
is killed, then the namespaces and veth pairs are deleted, also when the test failed.

:class:`NamespacedSshd` is a :class:`harness.service.Service`: ``/usr/sbin/sshd -D`` run by
``ip netns exec`` on port 22 of the namespace's address, root logins by public key only, host
key, configuration, pid file and log in its own directory. It fails with its log when it
cannot start; it is never skipped. Namespaces share the filesystem: the appliance root
directories a test builds are seen by the sshd and everything it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.service import Service

SSHD = Path("/usr/sbin/sshd")
IP = shutil.which("ip") or "/usr/sbin/ip"  # execv (harness.process) needs an absolute path
#: sshd's privilege separation directory (Debian's package creates it only with its service).
PRIVSEP_DIR = Path("/run/sshd")
SSH_PORT = 22


def _ip(*args: str) -> str:
    done = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def generate_key(path: Path, comment: str) -> str:
    """An ed25519 key pair without passphrase at ``path`` (+ ``.pub``); returns the public key."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path.with_name(path.name + ".pub").read_text().strip()


def fingerprint(key: Path) -> str:
    """The SHA256 fingerprint (``SHA256:...``) sshd logs for a login with this key."""
    done = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.split()[1]


@dataclass(frozen=True)
class NetnsLink:
    """A network namespace and the veth pair from the test's namespace into it."""

    netns: str
    #: The veth end in the test's namespace (the other end, inside, is ``eth0``).
    veth: str
    #: The test's side: where processes in the namespace reach the test's servers.
    host_address: str
    #: The namespace's side: where the test reaches the namespace's servers.
    address: str

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/30", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def pids(self) -> list[int]:
        """Every process in the namespace."""
        try:
            return [int(p) for p in _ip("netns", "pids", self.netns).split()]
        except RuntimeError:  # no such namespace
            return []

    def delete(self) -> None:
        """Kill whatever still runs in the namespace, delete it and the veth pair."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(RuntimeError):
            _ip("netns", "delete", self.netns)
        with contextlib.suppress(RuntimeError):  # gone with the namespace, or soon after
            _ip("link", "delete", self.veth)


def _free_subnet() -> int:
    """A third octet ``X`` from the pid on whose 10.213.X.0/24 no local interface sits."""
    used = _ip("-4", "-o", "addr", "show")
    for i in range(256):
        x = (os.getpid() + i) % 256
        if f" 10.213.{x}." not in used:
            return x
    raise RuntimeError("every 10.213.X.0/24 is in use by a local interface")


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[NetnsLink]]:
    """``count`` namespaces with their veth pairs (see the module docstring)."""
    if not 0 < count <= 64:
        raise ValueError("between 1 and 64 namespaces")
    x, pid = _free_subnet(), os.getpid()
    existing = set(_ip("netns", "list").split())
    links: list[NetnsLink] = []
    try:
        for n in range(count):
            link = NetnsLink(
                netns=f"derrick-{pid}-{n}",
                veth=f"dk{pid % 10**7}v{n}",  # interface names: at most 15 characters
                host_address=f"10.213.{x}.{4 * n + 1}",
                address=f"10.213.{x}.{4 * n + 2}",
            )
            if link.netns in existing:
                raise RuntimeError(f"network namespace {link.netns} exists already")
            links.append(link)
            link.create()
        yield links
    finally:
        for link in links:
            link.delete()


class NamespacedSshd(Service):
    """sshd on port 22 of a namespace's address (see the module docstring)."""

    name = "sshd"

    def __init__(
        self, base_dir: Path, link: NetnsLink, authorized_keys: Sequence[str], *,
        startup_timeout: float = 15.0,
    ) -> None:  # fmt: skip
        super().__init__(base_dir, startup_timeout=startup_timeout, stop_timeout=5.0)
        self.link = link
        self.host = link.address
        self.port = SSH_PORT
        self.authorized_keys = tuple(authorized_keys)
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        public = self.host_key.with_name(self.host_key.name + ".pub")
        self.host_public_key = (
            public.read_text().strip()
            if public.exists()
            else generate_key(self.host_key, f"root@{link.netns}")
        )

    def __repr__(self) -> str:
        return f"<NamespacedSshd {self.link.netns} {self.host}:{self.port} pid={self.pid}>"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "sshd.log"

    def known_hosts_line(self) -> str:
        """This server's entry for a client's ``UserKnownHostsFile``."""
        return f"{self.host} {self.host_public_key}"

    def accepted_logins(self) -> list[str]:
        """The log's ``Accepted publickey for ...`` lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if "Accepted publickey for " in line]

    def _log_files(self) -> list[Path]:
        return [self.output_path, self.log_path]

    def _assign_ports(self) -> None:
        """Port 22: the namespace has its own."""

    def _prepare(self) -> None:
        if not SSHD.is_file():
            raise FileNotFoundError(f"{SSHD} is missing: ./derrick bootstrap installs it")
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        keys = self.base_dir / "authorized_keys"
        keys.write_text("".join(f"{key}\n" for key in self.authorized_keys))
        keys.chmod(0o600)
        self.config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.base_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {keys}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    # keys and authorized_keys live in the test's directories, not ~root/.ssh
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def _command(self) -> Sequence[str]:
        return [
            IP, "netns", "exec", self.link.netns, str(SSHD), "-D",
            "-f", str(self.config_path), "-E", str(self.log_path),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
