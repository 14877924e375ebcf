"""OPC UA in-process: Sign & Encrypt (Basic256Sha256) with certificates made here, and the
browse command's proposed mapping. Private keys live only in the test's tmp_path."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.config import OpcUaDevice, parse_config
from edge.sources.opcua import OpcUaSource
from edge.sources.opcua_browse import browse, proposal_toml
from harness.opcua_rig import RigServer
from harness.ports import allocate_port
from tests.edge.sinks import RecordingSink

HEAD = """
[node]
site = "s017"
appliance = "s017-a042"
[mqtt]
servers = [{host = "127.0.0.1"}]
[queue]
path = "/tmp/q.db"
"""


def make_cert(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed application instance certificate (PEM) and its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(uri),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_sign_and_encrypt_subscription_and_browse_proposal(tmp_path: Path) -> None:
    server_cert, server_key = make_cert(tmp_path, "server", "urn:derrick:rig-sim:server")
    client_cert, client_key = make_cert(tmp_path, "edge", "urn:derrick:edge")
    rig = RigServer(
        allocate_port(), tags=["WOB", "GAS", "SPP"], certificate=server_cert,
        private_key=server_key,
    )  # fmt: skip
    async with rig:
        secure = (
            f'security = "SignAndEncrypt"\ncertificate = "{client_cert}"\n'
            f'private_key = "{client_key}"\nserver_certificate = "{server_cert}"\n'
        )
        cfg = parse_config(
            HEAD
            + f'[[devices]]\nid = "opc"\nsource = "opcua"\nendpoint = "{rig.endpoint}"\n'
            + secure
            + 'sensors = [{tag = "WOB", unit = "klbf", node_id = "ns=2;s=Rig.WOB"}]\n'
        )
        device = cfg.devices[0]
        assert isinstance(device, OpcUaDevice)
        # The browse command's proposal, over the encrypted channel.
        proposals = await browse(device)
        block = proposal_toml("opc", rig.endpoint, proposals)
        proposed = parse_config(HEAD + block).devices[0]
        assert isinstance(proposed, OpcUaDevice)
        assert {(s.tag, s.unit, s.node_id) for s in proposed.sensors} == {
            ("WOB", "klbf", "ns=2;s=Rig.WOB"), ("GAS", "%", "ns=2;s=Rig.GAS"),
            ("SPP", "psi", "ns=2;s=Rig.SPP"),
        }  # fmt: skip
        # A subscription over Sign & Encrypt delivers the server's values.
        source, sink = OpcUaSource(device, publishing_interval_ms=100), RecordingSink(0.2)
        task = asyncio.create_task(source.run(sink))
        try:
            for _ in range(100):
                if len(sink.readings) >= 5:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert sink.states[:1] == [True] and len(sink.readings) >= 5
        assert {r.tag for r in sink.readings} == {"WOB"}
        assert source.sampling_ms == 200.0 and rig.sampling_ms == 200.0
