"""``fedvault authority``: the operator's enrolment authority, kept apart from the server.

The authority key signs each run's directory (client id -> identity key, run id, version), the
only source of neighbours' keys a client accepts (``federation.authority``). Keep the key file
off the server machine: a server holding it could vouch for identities it made up.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

_KEY_FILE = click.option("--key-file", type=click.Path(dir_okay=False), required=True,
                         envvar="FEDVAULT_AUTHORITY_KEY", show_envvar=True,
                         help="The authority's key file (0600). Keep it off the server's machine.")
_JSON = click.option("--json", "as_json", is_flag=True, default=False, help="Print the result as JSON.")


@click.group()
def authority() -> None:
    """Create the operator's enrolment authority and sign runs' client directories with it.

    Steps: `init` once; collect each client's `fedvault client fingerprint --json` through a
    channel the server does not control; `sign-directory` for the run; `publish` to the server;
    give every client the authority fingerprint with its enrolment token.
    """


def _describe(key) -> dict:
    from federation.authority import fingerprint

    return {"authority_public_key": key.public_bytes.hex(), "fingerprint": fingerprint(key.public_bytes)}


@authority.command("init")
@_KEY_FILE
@_JSON
def init(key_file, as_json):
    """Create a new authority key (refuses to overwrite an existing file) and print its fingerprint."""
    from federation.authority import create_authority_key

    key = create_authority_key(Path(key_file))
    info = _describe(key)
    if as_json:
        click.echo(json.dumps({"key_file": str(key_file), **info}))
    else:
        click.echo(f"authority key created in {key_file} (mode 0600)")
        click.echo(f"fingerprint {info['fingerprint']}  (give it to every client, out of band)")


@authority.command("fingerprint")
@_KEY_FILE
@_JSON
def show_fingerprint(key_file, as_json):
    """Print the authority's public key and fingerprint."""
    from federation.authority import load_authority_key

    info = _describe(load_authority_key(Path(key_file)))
    click.echo(json.dumps(info) if as_json else f"fingerprint {info['fingerprint']}\n"
                                                 f"public key  {info['authority_public_key']}")


def _read_keys(path: Path) -> dict[int, bytes]:
    """Client keys from a file: a JSON object {"id": "hex key"}, a JSON list of
    `fedvault client fingerprint --json` objects, or one such object per line."""
    from federation.authority import fingerprint

    text = Path(path).read_text()
    try:
        values = json.loads(text)
    except ValueError:
        try:
            values = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as error:
            raise click.UsageError(f"{path}: not JSON or JSON lines: {error}") from None
    try:
        if isinstance(values, dict) and "client_id" not in values:
            keys = {int(c): bytes.fromhex(k) for c, k in values.items()}
        else:
            entries = [values] if isinstance(values, dict) else values
            keys = {}
            for entry in entries:
                key = bytes.fromhex(entry["identity_public_key"])
                if "fingerprint" in entry and entry["fingerprint"] != fingerprint(key):
                    raise ValueError(f"client {entry['client_id']}'s fingerprint does not match its key")
                if int(entry["client_id"]) in keys:
                    raise ValueError(f"client {entry['client_id']} is listed twice")
                keys[int(entry["client_id"])] = key
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise click.UsageError(f"{path}: {error}") from None
    return keys


@authority.command("sign-directory")
@_KEY_FILE
@click.option("--run-id", type=click.IntRange(min=0), required=True, help="The run the directory is for.")
@click.option("--version", "version", type=click.IntRange(min=1), required=True,
              help="Directory version; a client refuses a version older than one it saw, so raise it with "
                   "every change (a client added or removed).")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Client keys collected out of band: JSON {\"id\": \"hex\"}, or the `fedvault client "
                   "fingerprint --json` outputs (a list, or one per line).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True,
              help="Where to write the signed directory (JSON), for `fedvault authority publish`.")
@_JSON
def sign(key_file, run_id, version, keys_file, out_file, as_json):
    """Sign a run's directory: client id -> identity key, run id, version."""
    from federation.authority import fingerprint, load_authority_key, sign_directory

    signed = sign_directory(load_authority_key(Path(key_file)), run_id, version, _read_keys(Path(keys_file)))
    Path(out_file).write_bytes(signed.to_bytes())
    summary = {"run_id": run_id, "version": version, "clients": len(signed.directory.identity_keys),
               "authority_fingerprint": fingerprint(signed.authority_public_key), "out": str(out_file)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"signed directory v{version} of run {run_id}: {summary['clients']} clients -> {out_file}")


@authority.command("publish")
@click.option("--server", "server_url", required=True, envvar="FEDVAULT_SERVER", show_envvar=True, metavar="URL",
              help="The server, e.g. https://fl.example.org:8443.")
@click.option("--directory", "directory_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The signed directory from `sign-directory`.")
@click.option("--operator-token", envvar="FEDVAULT_OPERATOR_TOKEN", show_envvar=True, required=True,
              help="The server's operator token.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA bundle (PEM) that signed the server's certificate.")
@click.option("--insecure", is_flag=True, default=False, help="Allow plain http:// to a non-loopback host.")
@_JSON
def publish(server_url, directory_file, operator_token, cafile, insecure, as_json):
    """Give the server the signed directory to serve to clients (it cannot alter it unnoticed)."""
    import httpx

    from federation.authority import SignedDirectory
    from federation.errors import FederationError
    from federation.http_client import check_transport

    check_transport(server_url, insecure=insecure)
    body = SignedDirectory.from_bytes(Path(directory_file).read_bytes()).to_bytes()  # refuse a malformed file here
    try:
        response = httpx.post(f"{server_url.rstrip('/')}/v1/operator/directory", content=body, timeout=60,
                              headers={"Authorization": f"Bearer {operator_token}",
                                       "Content-Type": "application/json"},
                              verify=cafile if cafile else True)
    except httpx.TransportError as error:
        raise FederationError(f"cannot reach {server_url}: {error}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise FederationError(f"the server refused the directory: {response.status_code} {detail}")
    result = response.json()
    click.echo(json.dumps(result) if as_json else
               f"directory v{result['version']} of run {result['run_id']} ({result['clients']} clients): "
               f"{result['status']}")
