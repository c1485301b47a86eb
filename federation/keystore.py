"""A client's local key file: its Ed25519 identity key and its history secret.

Only the client holds these. The file is created with mode 0600 and replaced atomically, so a
crash never leaves half a key; a file with looser permissions or the wrong content is refused.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from federation.errors import FederationError
from secagg.keys import IdentityKey
from unlearning.secrets import generate_history_secret

KEY_FILE_VERSION = 1


class KeyFileError(FederationError):
    """A key file is missing, unreadable, malformed, or readable by others."""


@dataclass(frozen=True)
class ClientKeys:
    client_id: int
    identity: IdentityKey
    history_secret: bytes

    @classmethod
    def generate(cls, client_id: int) -> ClientKeys:
        return cls(client_id, IdentityKey.generate(), generate_history_secret())


def save_keys(path: Path, keys: ClientKeys) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({
        "version": KEY_FILE_VERSION,
        "client_id": keys.client_id,
        "identity_private_key": keys.identity.private_bytes.hex(),
        "history_secret": keys.history_secret.hex(),
    }).encode()
    write_private_file(path, payload)


def load_keys(path: Path) -> ClientKeys:
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"key file not found: {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by other users (mode {oct(mode & 0o777)}); chmod 600 it")
    try:
        values = json.loads(path.read_bytes())
        if values["version"] != KEY_FILE_VERSION:
            raise KeyFileError(f"key file {path} has unsupported version {values['version']}")
        return ClientKeys(
            client_id=int(values["client_id"]),
            identity=IdentityKey.from_private_bytes(bytes.fromhex(values["identity_private_key"])),
            history_secret=bytes.fromhex(values["history_secret"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise KeyFileError(f"key file {path} is malformed: {error}") from None


def load_or_create_keys(path: Path, client_id: int) -> ClientKeys:
    path = Path(path)
    if path.exists():
        keys = load_keys(path)
        if keys.client_id != client_id:
            raise KeyFileError(f"key file {path} belongs to client {keys.client_id}, not {client_id}")
        return keys
    keys = ClientKeys.generate(client_id)
    save_keys(path, keys)
    return keys


def run_state_tag(run_id: int, created_at: datetime) -> str:
    """Names a run's client-side state files (own ledger, record chain): unique even when two
    databases, or a database deleted and created again, reuse a run id."""
    return f"{run_id}-{created_at:%Y%m%dT%H%M%S%f}"


def write_private_file(path: Path, payload: bytes) -> None:
    """Atomically replace ``path`` with ``payload``, mode 0600, fsync'ed (a crash leaves the old
    file or the new one, never half of either)."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, payload)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
