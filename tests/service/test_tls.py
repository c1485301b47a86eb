"""`fedvault serve --certfile/--keyfile` speaks HTTPS only, and a client trusts it through --cafile."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation.http_client import ServiceClient
from federation.service.errors import ServiceRequestError

pytestmark = pytest.mark.slow


def self_signed(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedvault test server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_the_server_serves_tls_and_clients_verify_it(tmp_path):
    cert, key = self_signed(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--db", str(tmp_path / "db.sqlite"), "--state-dir",
         str(tmp_path / "state"), "--port", str(port), "--certfile", str(cert), "--keyfile", str(key),
         "--dataset", "digits", "--model", "logreg", "--clients", "4", "--noise", "none", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                response = httpx.get(f"{url}/v1/health", verify=ssl.create_default_context(cafile=str(cert)))
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the TLS server did not come up"
                time.sleep(0.3)
        assert response.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/v1/health")  # not trusted without the CA
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/v1/health")  # no plain HTTP on the TLS port
        client = ServiceClient(url, verify=str(cert))
        assert client.run_info()["run_id"] == 1
        with pytest.raises(ServiceRequestError, match="certificate is not trusted.*--cafile"):
            ServiceClient(url).run_info()  # refused at once: retrying cannot fix trust
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
