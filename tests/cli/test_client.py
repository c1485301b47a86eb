"""``fedvault client``: transport checks and the fingerprint command."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.errors import FederationError
from federation.http_client import ClientOptions, check_transport


@pytest.mark.parametrize("url", ["https://fl.example.org:8443", "http://127.0.0.1:8080", "http://localhost:1",
                                 "http://[::1]:8080", "http://127.8.9.10"])
def test_https_and_loopback_http_are_accepted(url):
    check_transport(url)


@pytest.mark.parametrize("url", ["http://fl.example.org", "http://10.0.0.5:8080", "http://[2001:db8::1]/",
                                 "http://localhost.example.org"])
def test_plain_http_to_another_host_is_refused_unless_insecure(url, tmp_path):
    check_transport(url, insecure=True)  # the pre-change behaviour: anything goes
    ClientOptions(server_url=url, client_id=0, key_directory=tmp_path, insecure=True)
    with pytest.raises(FederationError, match="refusing plain HTTP"):
        check_transport(url)
    with pytest.raises(FederationError, match="refusing plain HTTP"):
        ClientOptions(server_url=url, client_id=0, key_directory=tmp_path)


def test_an_unknown_scheme_is_refused():
    with pytest.raises(FederationError, match="must start with https://"):
        check_transport("ftp://fl.example.org", insecure=True)


def test_the_cli_refuses_plain_http_before_touching_the_key_file(tmp_path):
    arguments = ["client", "request-deletion", "--server", "http://fl.example.org", "--client-id", "0",
                 "--key-dir", str(tmp_path / "keys")]
    refused = CliRunner().invoke(fedvault, arguments)
    assert refused.exit_code != 0 and "refusing plain HTTP to 'fl.example.org'" in refused.output
    # With --insecure the transport check passes; this client then stops at its missing key file.
    allowed = CliRunner().invoke(fedvault, [*arguments, "--insecure"])
    assert allowed.exit_code != 0 and "key file not found" in allowed.output
