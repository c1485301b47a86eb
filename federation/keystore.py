"""A client's local key file: its Ed25519 identity key and its history secret.

Only the client holds these. A new key file is created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600,
in a folder created 0700; a rewrite goes through a fresh ``mkstemp`` name and an atomic rename,
so a crash never leaves half a key and nothing planted at a predictable path (a 0644 file, a
symlink) is written through. A file with looser permissions, a symlink, or the wrong content is
refused when read. The same writers serve every secret-bearing client file (record chains, own
ledger, per-run history secrets, LoCoDL state) and the server's state files.

The key file's history secret is a master secret: the secret a run's records are sealed under is
derived from it per run (``federation.run_secrets``), never used as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
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


def _key_payload(keys: ClientKeys) -> bytes:
    return json.dumps({
        "version": KEY_FILE_VERSION,
        "client_id": keys.client_id,
        "identity_private_key": keys.identity.private_bytes.hex(),
        "history_secret": keys.history_secret.hex(),
    }).encode()


def create_key_file(path: Path, keys: ClientKeys) -> None:
    """Write a new key file; refuses (``KeyFileError``) if any file or symlink is already there."""
    create_private_file(path, _key_payload(keys))


def save_keys(path: Path, keys: ClientKeys) -> None:
    """Write or atomically replace a key file (``write_private_file``)."""
    write_private_file(Path(path), _key_payload(keys))


def load_keys(path: Path) -> ClientKeys:
    path = Path(path)
    raw = read_private_file(path)
    try:
        values = json.loads(raw)
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
    if path.exists() or path.is_symlink():
        keys = load_keys(path)
        if keys.client_id != client_id:
            raise KeyFileError(f"key file {path} belongs to client {keys.client_id}, not {client_id}")
        return keys
    keys = ClientKeys.generate(client_id)
    create_key_file(path, keys)
    return keys


def run_state_tag(run_id: int, created_at: datetime) -> str:
    """Names a run's client-side state files (own ledger, record chain): unique even when two
    databases, or a database deleted and created again, reuse a run id."""
    return f"{run_id}-{created_at:%Y%m%dT%H%M%S%f}"


def write_private_file(path: Path, payload: bytes) -> None:
    """Atomically replace ``path`` with ``payload``, mode 0600, fsync'ed (a crash leaves the old
    file or the new one, never half of either).

    The temporary file is a fresh name from ``tempfile.mkstemp`` in the same folder (created with
    O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600): a file or symlink planted at a predictable temporary
    path is never opened, so it can neither keep a looser mode nor redirect the write. A symlink
    at ``path`` itself is refused (``rename`` would replace the link, but a reader following it
    elsewhere is a sign of tampering). The folder is created 0700 if missing.
    """
    path = Path(path)
    ensure_private_folder(path.parent)
    if path.is_symlink():
        raise KeyFileError(f"{path} is a symbolic link; refusing to write secret material through it")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, payload)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def create_private_file(path: Path, payload: bytes) -> None:
    """Create ``path`` holding ``payload`` with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, fsync'ed.

    Fails (``KeyFileError``) if anything, a symlink included, already exists there: a secret is
    never written into a file someone else prepared.
    """
    path = Path(path)
    ensure_private_folder(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite it") from None
    try:
        os.write(descriptor, payload)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def ensure_private_folder(folder: Path) -> None:
    """Create ``folder`` (and missing parents) with mode 0700; an existing folder is left as it is."""
    Path(folder).mkdir(mode=0o700, parents=True, exist_ok=True)


def read_private_file(path: Path) -> bytes:
    """The bytes of a secret-bearing file, opened with O_NOFOLLOW and refused (``KeyFileError``)
    unless it is a regular file that only its owner can access (mode ``0600`` or stricter)."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"key file not found: {path}") from None
    except OSError as error:
        if path.is_symlink():
            raise KeyFileError(f"{path} is a symbolic link; refusing to read secret material through it") from None
        raise KeyFileError(f"{path}: {error.strerror}") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path} is accessible by other users (mode {oct(info.st_mode & 0o777)}); "
                               "chmod 600 it")
        chunks = []
        while chunk := os.read(descriptor, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)
