"""A client's history secret for one run: derived, kept per run, destroyed after its deletion.

The key file's ``history_secret`` is a master secret M_i; the secret that seals a run's history
records (and that a deletion request releases) is H_i(run) = HKDF(M_i, salt = N_i(run), info =
run, client) (``unlearning.secrets.derive_run_history_secret``). N_i(run) is 32 bytes from the
OS CSPRNG in ``<key file stem>.run-<run tag>.history`` beside the key file, created 0600 with
O_EXCL|O_NOFOLLOW on the client's first enrolment in the run. The run tag (run id and creation
time, ``federation.keystore.run_state_tag``) keeps two databases that reuse a run id apart.

After the server confirms that a deletion was shredded, :func:`destroy_run_history_secret`
overwrites the nonce with zeros, fsyncs, and replaces the file with a tombstone: H_i(run) can no
longer be derived (not even from M_i), and the client refuses to derive a fresh one for that run,
which would not match its commitment. Assumption: the overwrite reaches the disk's blocks on a
file system that rewrites in place; on copy-on-write file systems and SSDs it only unlinks, so
the nonce's old blocks may survive until reused (the same holds for any file-based secret).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from federation.keystore import (ClientKeys, KeyFileError, create_private_file, read_private_file, run_state_tag,
                                 write_private_file)
from unlearning.secrets import RUN_NONCE_BYTES, derive_run_history_secret

_FORMAT_VERSION = 1

__all__ = ["RunSecretDestroyedError", "destroy_run_history_secret", "run_history_secret", "run_secret_path",
           "stored_run_history_secret"]


class RunSecretDestroyedError(KeyFileError):
    """This run's history secret was destroyed (after its deletion); it cannot be used again."""


def run_secret_path(key_file: str | os.PathLike[str], run_tag: str) -> Path:
    """``<key file without suffix>.run-<run_tag>.history``, beside the key file."""
    key_file = Path(key_file)
    return key_file.with_name(f"{key_file.stem}.run-{run_tag}.history")


def run_history_secret(key_file: str | os.PathLike[str], keys: ClientKeys, run_id: int, run_tag: str, *,
                       create: bool = True) -> bytes:
    """H_i(run) for this client's ``keys``; the run's nonce file is created when missing and
    ``create`` (enrolment), else ``KeyFileError``. ``RunSecretDestroyedError`` after
    :func:`destroy_run_history_secret`."""
    path = run_secret_path(key_file, run_tag)
    if not (path.exists() or path.is_symlink()):
        if not create:
            raise KeyFileError(f"no history secret for run {run_tag} at {path} (this client never enrolled in it "
                               "from this key folder)")
        create_private_file(path, _encode({"nonce": os.urandom(RUN_NONCE_BYTES).hex()}))
    values = _decode(path)
    if values.get("destroyed_at") is not None:
        raise RunSecretDestroyedError(
            f"client {keys.client_id}'s history secret for run {run_tag} was destroyed at {values['destroyed_at']} "
            "after its deletion; it cannot be used again")
    try:
        nonce = bytes.fromhex(values["nonce"])
    except (KeyError, TypeError, ValueError):
        raise KeyFileError(f"{path} is malformed") from None
    return derive_run_history_secret(keys.history_secret, nonce, run_id, keys.client_id)


def destroy_run_history_secret(key_file: str | os.PathLike[str], run_tag: str, *, when: str) -> bool:
    """Overwrite this run's nonce with zeros and leave a tombstone (``when``: an ISO timestamp).
    Returns False when there was no live secret to destroy (none, or already destroyed)."""
    path = run_secret_path(key_file, run_tag)
    if not path.exists():
        return False
    values = _decode(path)
    if values.get("destroyed_at") is not None:
        return False
    size = path.stat().st_size
    descriptor = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.write(descriptor, bytes(size))  # overwrite in place before the rename drops the blocks
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    write_private_file(path, _encode({"destroyed_at": when}))
    return True


def _encode(values: dict) -> bytes:
    return json.dumps({"version": _FORMAT_VERSION, **values}).encode()


def _decode(path: Path) -> dict:
    try:
        values = json.loads(read_private_file(path))
        if not isinstance(values, dict) or values.get("version") != _FORMAT_VERSION:
            raise ValueError("unsupported version")
        return values
    except ValueError as error:
        raise KeyFileError(f"{path} is malformed: {error}") from None


def stored_run_history_secret(key_file: str | os.PathLike[str], keys: ClientKeys, repository, run_id: int) -> bytes:
    """H_i(run) of a run stored in ``repository`` (its tag from the run's id and creation time), for a
    client that enrolled in it; ``KeyFileError`` if it never did, ``RunSecretDestroyedError`` after
    its deletion."""
    return run_history_secret(key_file, keys, run_id, run_state_tag(run_id, repository.get_run(run_id).created_at),
                              create=False)
