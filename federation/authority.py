"""The enrolment authority: an operator-held Ed25519 key that vouches for every client's identity key.

Why. SecAgg+ clients verify their neighbours' key advertisements with the neighbours' identity
keys. If those keys come from the aggregating server alone, a deviating server can hand a victim
keys it made itself, stand in for every neighbour, open the victim's share messages and rebuild
its self-mask seed. The authority separates *who vouches for identities* from *who aggregates*.

Parties and keys.

- The operator creates the authority key (``fedvault authority init``) on a machine of its own,
  apart from the server's state directory; the server never holds it.
- Each client creates its identity key locally and shows its fingerprint
  (``fedvault client fingerprint``); the operator collects (client id, identity public key) pairs
  through a channel the server does not control, checks each fingerprint with its client, and
  signs the run's directory (``fedvault authority sign-directory``):

      signature = Ed25519(authority, encode_parts("fedvault/client-directory/v1", run id, version,
                                                  n, id_1, key_1, ..., id_n, key_n))   (ids ascending)

- The operator gives each client the authority's fingerprint out of band, like its enrolment
  token; the client pins it for the run (:class:`DirectoryPins`), and from then on uses a
  directory only if it verifies under the pinned key, names this run, lists the client itself
  with its own key, does not roll the version back, and keeps every neighbour's key as first seen.

What it guarantees, assuming the authority key stays with the operator and the fingerprint and
the client keys were exchanged out of band: the server alone cannot add a client (no directory
lists it), replace a client's key (the signature breaks, or the pin refuses the change), or
impersonate one (it cannot sign advertisements under a key it does not hold). A compromised
authority *and* server together can still add sybils to a fresh run; pins keep them from
replacing a key a client has already seen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from federation.errors import FederationError
from federation.keystore import KeyFileError, create_private_file, read_private_file, write_private_file
from secagg.context import encode_parts
from secagg.errors import AuthenticationError, ConfigurationError
from secagg.keys import IdentityKey, check_identity_keys, verify_signature

AUTHORITY_FILE_VERSION = 1
PINS_FILE_VERSION = 1
FINGERPRINT_HEX_DIGITS = 32  # 128 bits of SHA-256: no second preimage within reach

_DIRECTORY_LABEL = "fedvault/client-directory/v1"
_FINGERPRINT_LABEL = "fedvault/key-fingerprint/v1"
_AUTHORITY_KIND = "fedvault-enrolment-authority"

__all__ = [
    "AuthorityError",
    "Directory",
    "DirectoryPins",
    "DirectoryRefusedError",
    "SignedDirectory",
    "create_authority_key",
    "fingerprint",
    "load_authority_key",
    "normalise_fingerprint",
    "pins_path",
    "sign_directory",
]


class AuthorityError(FederationError):
    """An authority key file or a directory is missing, malformed or inconsistent."""


class DirectoryRefusedError(AuthorityError):
    """A client refuses a directory: unsigned, not verifiable under its pinned authority, for
    another run, rolled back, or changing a key it has already seen."""


# --- fingerprints ------------------------------------------------------------------------------


def fingerprint(public_key: bytes) -> str:
    """Short, comparable form of an Ed25519 public key: 128 bits of SHA-256, as 8 groups of 4 hex."""
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != 32:
        raise AuthorityError("a fingerprint is of a 32-byte Ed25519 public key")
    digest = hashlib.sha256(encode_parts(_FINGERPRINT_LABEL, bytes(public_key))).hexdigest()[:FINGERPRINT_HEX_DIGITS]
    return "-".join(digest[i:i + 4] for i in range(0, FINGERPRINT_HEX_DIGITS, 4))


def normalise_fingerprint(text: str) -> str:
    """``text`` in :func:`fingerprint`'s form (case, spaces, ':' and '-' are ignored)."""
    digits = "".join(ch for ch in str(text).lower() if ch not in " :-")
    if len(digits) != FINGERPRINT_HEX_DIGITS or any(ch not in "0123456789abcdef" for ch in digits):
        raise AuthorityError(f"a fingerprint is {FINGERPRINT_HEX_DIGITS} hex digits (e.g. "
                             f"'1a2b-3c4d-...'), got {str(text)[:60]!r}")
    return "-".join(digits[i:i + 4] for i in range(0, FINGERPRINT_HEX_DIGITS, 4))


def _same_fingerprint(first: str, second: str) -> bool:
    return hmac.compare_digest(normalise_fingerprint(first).encode(), normalise_fingerprint(second).encode())


# --- the authority key file --------------------------------------------------------------------


def create_authority_key(path: str | os.PathLike[str]) -> IdentityKey:
    """Create a new authority key file (O_EXCL|O_NOFOLLOW, 0600; refuses to overwrite anything)."""
    key = IdentityKey.generate()
    payload = json.dumps({"version": AUTHORITY_FILE_VERSION, "kind": _AUTHORITY_KIND,
                          "private_key": key.private_bytes.hex()}).encode()
    create_private_file(Path(path), payload)
    return key


def load_authority_key(path: str | os.PathLike[str]) -> IdentityKey:
    """The authority key in ``path`` (a 0600 regular file; ``KeyFileError`` otherwise)."""
    raw = read_private_file(Path(path))
    try:
        values = json.loads(raw)
        if values.get("kind") != _AUTHORITY_KIND or values.get("version") != AUTHORITY_FILE_VERSION:
            raise ValueError("not a fedvault authority key file of a supported version")
        return IdentityKey.from_private_bytes(bytes.fromhex(values["private_key"]))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise KeyFileError(f"authority key file {path} is malformed: {error}") from None


# --- directories -------------------------------------------------------------------------------


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**63:
        raise AuthorityError(f"{name} must be an int in {low}..2**63-1, got {value!r}")
    return value


@dataclass(frozen=True)
class Directory:
    """The run's identity keys as the authority vouches for them: client id -> Ed25519 public key."""

    run_id: int
    version: int
    identity_keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        _check_int(self.run_id, "run_id", 0)
        _check_int(self.version, "version", 1)
        try:
            keys = check_identity_keys(self.identity_keys)
        except ConfigurationError as error:
            raise AuthorityError(f"directory identity keys: {error}") from None
        if not keys:
            raise AuthorityError("a directory lists at least one client")
        object.__setattr__(self, "identity_keys", dict(sorted(keys.items())))

    def transcript(self) -> bytes:
        """The exact bytes the authority signs."""
        parts: list[int | bytes] = []
        for client_id, key in self.identity_keys.items():
            parts += [client_id, key]
        return encode_parts(_DIRECTORY_LABEL, self.run_id, self.version, len(self.identity_keys), *parts)


@dataclass(frozen=True)
class SignedDirectory:
    """A directory with the authority's public key and signature (JSON with hex on the wire)."""

    directory: Directory
    authority_public_key: bytes
    signature: bytes

    def verified_by(self, authority_public_key: bytes) -> Directory:
        """The directory, if it is signed by ``authority_public_key``; DirectoryRefusedError otherwise."""
        if not hmac.compare_digest(bytes(authority_public_key), self.authority_public_key):
            raise DirectoryRefusedError(
                f"the directory is signed by authority {fingerprint(self.authority_public_key)}, not by the pinned "
                f"authority {fingerprint(bytes(authority_public_key))}")
        try:
            verify_signature(self.authority_public_key, self.directory.transcript(), self.signature)
        except AuthenticationError:
            raise DirectoryRefusedError("the directory's authority signature does not verify "
                                        "(altered, or signed by another key)") from None
        return self.directory

    def self_verified(self) -> Directory:
        """The directory if its signature verifies under the key it names (a server's sanity check;
        a client must use :meth:`verified_by` with its pinned key)."""
        return self.verified_by(self.authority_public_key)

    def to_json(self) -> dict:
        return {"format": _DIRECTORY_LABEL, "run_id": self.directory.run_id, "version": self.directory.version,
                "identity_keys": {str(c): k.hex() for c, k in self.directory.identity_keys.items()},
                "authority_public_key": self.authority_public_key.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, values: object) -> SignedDirectory:
        try:
            if not isinstance(values, dict) or values.get("format") != _DIRECTORY_LABEL:
                raise ValueError(f"format must be {_DIRECTORY_LABEL!r}")
            keys = {_client_id(c): bytes.fromhex(k) for c, k in values["identity_keys"].items()}
            directory = Directory(values["run_id"], values["version"], keys)
            authority = bytes.fromhex(values["authority_public_key"])
            signature = bytes.fromhex(values["signature"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AuthorityError(f"malformed signed directory: {error}") from None
        if len(authority) != 32 or len(signature) != 64:
            raise AuthorityError("malformed signed directory: the authority key is 32 bytes, the signature 64")
        return cls(directory, authority, signature)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDirectory:
        try:
            values = json.loads(data)
        except ValueError as error:
            raise AuthorityError(f"malformed signed directory: {error}") from None
        return cls.from_json(values)


def _client_id(text: object) -> int:
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        raise ValueError(f"client id {text!r} is not a decimal integer")
    return int(text)


def sign_directory(authority: IdentityKey, run_id: int, version: int,
                   identity_keys: Mapping[int, bytes]) -> SignedDirectory:
    """The authority's signature over (run, version, every client id and identity key)."""
    directory = Directory(run_id, version, identity_keys)
    return SignedDirectory(directory, authority.public_bytes, authority.sign(directory.transcript()))


# --- the client's pins -------------------------------------------------------------------------


def pins_path(key_file: str | os.PathLike[str], run_tag: str) -> Path:
    """``<key file without suffix>.run-<run_tag>.directory``, beside the key file."""
    key_file = Path(key_file)
    return key_file.with_name(f"{key_file.stem}.run-{run_tag}.directory")


class DirectoryPins:
    """What one client pinned for one run: the authority, and each neighbour's key as first seen.

    Kept in a 0600 file beside the key file (written atomically, refused if others can write it),
    so pins survive restarts. The authority is pinned by fingerprint when the client first starts
    (the fingerprint the operator gave out of band) and by full public key at the first directory
    that matches it (or by full key directly, as the simulation does).

    Args:
        path: the pins file (:func:`pins_path`).
        client_id, own_public_key: this client (it must be in every directory it accepts).
        run_id: the run every accepted directory must name.
    """

    def __init__(self, path: str | os.PathLike[str], client_id: int, own_public_key: bytes, run_id: int) -> None:
        self.path = Path(path)
        self.client_id = client_id
        self.own_public_key = bytes(own_public_key)
        self.run_id = run_id
        self.authority_fingerprint: str | None = None
        self.authority_public_key: bytes | None = None
        self.version = 0
        self.keys: dict[int, bytes] = {}
        if self.path.exists() or self.path.is_symlink():
            self._load()

    @property
    def pinned(self) -> bool:
        return self.authority_fingerprint is not None

    def pin_authority(self, *, public_key: bytes | None = None, fingerprint_text: str | None = None) -> None:
        """Pin the authority (first time), or check that it is the one already pinned.

        DirectoryRefusedError if the pins file already holds another authority: a client never
        switches authority within a run (a new authority means a new run)."""
        if public_key is not None:
            given = fingerprint(public_key)
        elif fingerprint_text is not None:
            given = normalise_fingerprint(fingerprint_text)
        else:
            return
        if self.authority_fingerprint is not None:
            if not _same_fingerprint(given, self.authority_fingerprint):
                raise DirectoryRefusedError(
                    f"client {self.client_id} pinned authority {self.authority_fingerprint} for run {self.run_id}; "
                    f"refusing another authority ({given})")
            if public_key is not None and self.authority_public_key is None:
                self.authority_public_key = bytes(public_key)
                self._save()
            return
        self.authority_fingerprint = given
        self.authority_public_key = None if public_key is None else bytes(public_key)
        self._save()

    def accept(self, signed: SignedDirectory) -> dict[int, bytes]:
        """Check ``signed`` against the pins and return its identity keys; pin what is new.

        Refuses (DirectoryRefusedError, nothing pinned) a directory when no authority is pinned,
        signed by another authority or not verifiable, for another run, older than one already
        seen, not listing this client with its own key, or giving a seen neighbour another key.
        """
        if not isinstance(signed, SignedDirectory):
            raise DirectoryRefusedError(f"an unsigned directory ({type(signed).__name__}) is refused: "
                                        "this client only uses a directory signed by its pinned authority")
        if self.authority_fingerprint is None:
            raise DirectoryRefusedError(
                f"client {self.client_id} has no authority pinned for run {self.run_id}; give it the "
                "authority's fingerprint (--authority-fingerprint)")
        authority = self.authority_public_key
        if authority is None:  # pinned by fingerprint: the first matching key becomes the pin
            if not _same_fingerprint(fingerprint(signed.authority_public_key), self.authority_fingerprint):
                raise DirectoryRefusedError(
                    f"the directory is signed by authority {fingerprint(signed.authority_public_key)}, "
                    f"not by the pinned authority {self.authority_fingerprint}")
            authority = signed.authority_public_key
        directory = signed.verified_by(authority)
        if directory.run_id != self.run_id:
            raise DirectoryRefusedError(f"the directory is for run {directory.run_id}, not run {self.run_id}")
        if directory.version < self.version:
            raise DirectoryRefusedError(f"the directory's version {directory.version} is older than version "
                                        f"{self.version} this client already saw (rollback refused)")
        own = directory.identity_keys.get(self.client_id)
        if own is None or not hmac.compare_digest(own, self.own_public_key):
            raise DirectoryRefusedError(f"the directory does not list client {self.client_id} with its own identity "
                                        "key")
        for client_id, key in directory.identity_keys.items():
            seen = self.keys.get(client_id)
            if seen is not None and not hmac.compare_digest(seen, key):
                raise DirectoryRefusedError(
                    f"client {client_id}'s identity key changed since this client first saw it "
                    f"({fingerprint(seen)} -> {fingerprint(key)}); refusing the directory")
        self.authority_public_key = authority
        self.version = directory.version
        self.keys.update(directory.identity_keys)
        self._save()
        return dict(directory.identity_keys)

    def _save(self) -> None:
        payload = {"version": PINS_FILE_VERSION, "client_id": self.client_id, "run_id": self.run_id,
                   "authority_fingerprint": self.authority_fingerprint,
                   "authority_public_key": None if self.authority_public_key is None else self.authority_public_key.hex(),
                   "directory_version": self.version, "keys": {str(c): k.hex() for c, k in sorted(self.keys.items())}}
        write_private_file(self.path, json.dumps(payload, indent=1).encode())

    def _load(self) -> None:
        raw = read_private_file(self.path)
        try:
            values = json.loads(raw)
            if values.get("version") != PINS_FILE_VERSION:
                raise ValueError("unsupported version")
            if values["client_id"] != self.client_id or values["run_id"] != self.run_id:
                raise ValueError(f"it belongs to client {values['client_id']} of run {values['run_id']}")
            self.authority_fingerprint = normalise_fingerprint(values["authority_fingerprint"])
            key = values["authority_public_key"]
            self.authority_public_key = None if key is None else bytes.fromhex(key)
            self.version = int(values["directory_version"])
            self.keys = {_client_id(c): bytes.fromhex(k) for c, k in values["keys"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, AuthorityError) as error:
            raise KeyFileError(f"pins file {self.path} is malformed: {error}") from None
        if self.authority_public_key is not None and fingerprint(self.authority_public_key) != self.authority_fingerprint:
            raise KeyFileError(f"pins file {self.path} is inconsistent (key and fingerprint differ)")
