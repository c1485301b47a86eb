"""``fedvault client``: transport checks and the fingerprint command."""

from __future__ import annotations

import json

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


def test_the_operator_signs_a_directory_from_the_clients_fingerprint_lines(tmp_path):
    from federation.authority import SignedDirectory

    runner = CliRunner()
    init = runner.invoke(fedvault, ["authority", "init", "--key-file", str(tmp_path / "op" / "authority.key"),
                                    "--json"])
    assert init.exit_code == 0, init.output
    authority = json.loads(init.output)
    again = runner.invoke(fedvault, ["authority", "init", "--key-file", str(tmp_path / "op" / "authority.key")])
    assert again.exit_code != 0 and "already exists" in again.output  # never overwritten
    shown = runner.invoke(fedvault, ["authority", "fingerprint", "--key-file", str(tmp_path / "op" / "authority.key")])
    assert authority["fingerprint"] in shown.output
    lines = []
    for client in (0, 1, 2):
        result = runner.invoke(fedvault, ["client", "fingerprint", "--client-id", str(client), "--key-dir",
                                          str(tmp_path / "keys"), "--json"])
        assert result.exit_code == 0, result.output
        lines.append(result.output.strip())
    assert json.loads(lines[0]) == json.loads(runner.invoke(fedvault, [
        "client", "fingerprint", "--client-id", "0", "--key-dir", str(tmp_path / "keys"), "--json"]).output)
    (tmp_path / "keys.jsonl").write_text("\n".join(lines) + "\n")
    signed = runner.invoke(fedvault, ["authority", "sign-directory", "--key-file", str(tmp_path / "op" / "authority.key"),
                                      "--run-id", "9", "--version", "2", "--keys", str(tmp_path / "keys.jsonl"),
                                      "--out", str(tmp_path / "directory.json")])
    assert signed.exit_code == 0, signed.output
    directory = SignedDirectory.from_bytes((tmp_path / "directory.json").read_bytes())
    assert directory.self_verified().run_id == 9 and sorted(directory.directory.identity_keys) == [0, 1, 2]
    assert directory.authority_public_key.hex() == authority["authority_public_key"]
    # A line whose fingerprint does not match its key is refused (a typo, or a swapped key).
    tampered = json.loads(lines[1]) | {"fingerprint": json.loads(lines[2])["fingerprint"]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(tampered) + "\n")
    bad = runner.invoke(fedvault, ["authority", "sign-directory", "--key-file", str(tmp_path / "op" / "authority.key"),
                                   "--run-id", "9", "--version", "3", "--keys", str(tmp_path / "bad.jsonl"),
                                   "--out", str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "fingerprint does not match its key" in bad.output


def test_a_bad_policy_is_one_readable_line(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("min_cohort = 1\n")
    result = CliRunner().invoke(fedvault, ["client", "run", "--server", "https://fl.example.org", "--client-id", "0",
                                           "--key-dir", str(tmp_path / "keys"), "--policy", str(policy)])
    assert result.exit_code == 2 and "min_cohort must be an int >= 2" in result.output
    assert not (tmp_path / "keys").exists()
