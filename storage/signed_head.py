"""The server's signed audit-log head: a copy of the chain's tip that can be kept elsewhere.

The audit log is a hash chain without a secret, so someone who can write the database can
rewrite every entry, every ledger row and the stored head consistently. A head exported earlier
and kept outside the database pins the chain: the entry at its sequence must still have its hash
(``check_head_prefix``), because each hash commits to the whole prefix before it. Honest appends
after the export keep the saved head a prefix; a cut or rewritten chain does not.

The head is signed with the server's own Ed25519 key (generated from the OS CSPRNG by
``cryptography``, stored raw in a file of mode 0600 beside the SQLite database, or wherever
``--server-key`` points), so a head file cannot be forged to match a rewritten chain by anyone
without that key. The signature covers a domain-separated canonical JSON message naming the
format, the run, the sequence, the hash and the public key.

Assumptions: the key file is readable only by the server's account (a key file readable by
group or others is refused); whoever checks a head trusts the public key it was signed with
(it is in the head file and must equal the server key's).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from storage.audit import ChainHead
from storage.canonical import canonical_json
from storage.errors import IntegrityError

HEAD_FORMAT = "fedvault-audit-head/1"
_CONTEXT = b"fedvault audit-log head v1\x00"
KEY_SUFFIX = ".audit-key"
_HEX64 = frozenset("0123456789abcdef")


class SignedHeadError(IntegrityError):
    """A head file that does not verify, or a chain that no longer extends it."""


def default_key_path(database_location: str) -> Path | None:
    """``<database file>.audit-key`` beside a SQLite database file; None for a URL or ``:memory:``
    (a PostgreSQL server keeps its key in its state folder: pass the path explicitly)."""
    if database_location == ":memory:" or "://" in database_location:
        return None
    path = Path(database_location).expanduser().resolve()
    return path.with_name(path.name + KEY_SUFFIX)


def load_or_create_key(path: str | os.PathLike[str], *, create: bool = True) -> Ed25519PrivateKey:
    """The server's Ed25519 signing key from ``path``; created (mode 0600, exclusive create) when
    absent and ``create``. SignedHeadError for a key file that others can read or that is not a
    32-byte raw key."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise SignedHeadError(f"no server signing key at {path}")
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SignedHeadError(f"server signing key {path} has mode {mode:04o}; it must be readable by its owner "
                              "only (chmod 600)")
    raw = path.read_bytes()
    if len(raw) != 32:
        raise SignedHeadError(f"server signing key {path} is {len(raw)} bytes, not a raw 32-byte Ed25519 key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _message(run_id: int, head: ChainHead, public_key: str) -> bytes:
    return _CONTEXT + canonical_json({"format": HEAD_FORMAT, "run_id": run_id, "sequence": head.sequence,
                                      "entry_hash": head.entry_hash, "public_key": public_key})


@dataclass(frozen=True)
class SignedHead:
    """A run's audit-log head signed by the server."""

    run_id: int
    head: ChainHead
    public_key: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        return {"format": HEAD_FORMAT, "run_id": self.run_id, "sequence": self.head.sequence,
                "entry_hash": self.head.entry_hash, "public_key": self.public_key, "signature": self.signature}


def sign_head(key: Ed25519PrivateKey, run_id: int, head: ChainHead) -> SignedHead:
    public = public_key_hex(key)
    return SignedHead(run_id, head, public, key.sign(_message(run_id, head, public)).hex())


def parse_signed_head(data: Any) -> SignedHead:
    """A SignedHead from its JSON; SignedHeadError for anything malformed (signature unchecked)."""
    if not isinstance(data, dict) or data.get("format") != HEAD_FORMAT:
        raise SignedHeadError(f"not a {HEAD_FORMAT} head file")
    expected = {"format", "run_id", "sequence", "entry_hash", "public_key", "signature"}
    if set(data) != expected:
        raise SignedHeadError(f"head file fields are {sorted(data)}, expected {sorted(expected)}")
    run_id, sequence = data["run_id"], data["sequence"]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (run_id, sequence)):
        raise SignedHeadError("head file run_id and sequence must be non-negative integers")
    for name, length in (("entry_hash", 64), ("public_key", 64), ("signature", 128)):
        value = data[name]
        if not isinstance(value, str) or len(value) != length or not set(value) <= _HEX64:
            raise SignedHeadError(f"head file {name} must be {length} lower-case hex digits")
    return SignedHead(run_id, ChainHead(sequence, data["entry_hash"]), data["public_key"], data["signature"])


def read_head_file(path: str | os.PathLike[str]) -> SignedHead:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SignedHeadError(f"cannot read head file {path}: {error}") from None
    return parse_signed_head(data)


def write_head_file(path: str | os.PathLike[str], signed: SignedHead) -> None:
    Path(path).write_text(json.dumps(signed.as_json(), indent=2) + "\n", encoding="utf-8")


def verify_signature(signed: SignedHead, trusted_public_key: str | None) -> None:
    """Check the head's signature, and that it was made by ``trusted_public_key`` (hex) when
    given; SignedHeadError otherwise."""
    if trusted_public_key is not None and signed.public_key != trusted_public_key:
        raise SignedHeadError(f"the head was signed by key {signed.public_key[:16]}…, not by this server's key "
                              f"{trusted_public_key[:16]}…")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(signed.public_key)).verify(
            bytes.fromhex(signed.signature), _message(signed.run_id, signed.head, signed.public_key))
    except (InvalidSignature, ValueError):
        raise SignedHeadError("the head file's signature does not verify (the file was altered)") from None


def check_head_prefix(entries_by_sequence: dict[int, str], current: ChainHead | None, signed: SignedHead) -> None:
    """The saved head is a prefix of the current chain: the entry at its sequence still has its
    hash. ``entries_by_sequence`` maps sequence -> entry hash of the run's (verified) audit log.
    SignedHeadError naming what changed."""
    saved = signed.head
    if current is None or current.sequence < saved.sequence:
        end = "is empty" if current is None else f"ends at #{current.sequence}"
        raise SignedHeadError(f"run {signed.run_id}: the saved head is at audit entry #{saved.sequence} but the log "
                              f"now {end}: entries #{0 if current is None else current.sequence + 1}..#{saved.sequence} "
                              "were cut")
    if entries_by_sequence.get(saved.sequence) != saved.entry_hash:
        raise SignedHeadError(f"run {signed.run_id}: audit entry #{saved.sequence} no longer has the saved head's hash "
                              f"{saved.entry_hash[:16]}…: the log up to it was rewritten")


def check_signed_head(repository, signed: SignedHead, trusted_public_key: str | None) -> None:
    """Verify ``signed`` (signature, signer) and that the run's audit log still extends it."""
    from sqlalchemy import select

    from storage.schema import AuditLogEntry

    verify_signature(signed, trusted_public_key)
    with repository.database.reading() as session:
        hashes = dict(session.execute(select(AuditLogEntry.sequence, AuditLogEntry.entry_hash)
                                      .where(AuditLogEntry.run_id == signed.run_id)).all())
    current = max(hashes) if hashes else None
    check_head_prefix(hashes, None if current is None else ChainHead(current, hashes[current]), signed)

