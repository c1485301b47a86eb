"""The server's side of the enrolment authority: store, check against enrolment, and serve the
directory the operator's authority signed (``federation.authority``).

The server is not trusted with identities: clients verify the directory against the authority
key they pinned, whatever the server does. These checks keep an honest server consistent with
what its clients will accept, so a mistake shows up at publication, not as refused rounds:

- a published directory must verify under the key it names, be for this run, come from the same
  authority as the one published before, and have a higher version (or be the same bytes again);
- every client it lists that is already enrolled must be enrolled with the listed key;
- once a directory is published, enrolment accepts only a client it lists, with the listed key.
"""

from __future__ import annotations

import hmac
import threading

from federation.authority import AuthorityError, DirectoryRefusedError, SignedDirectory, fingerprint
from federation.service.errors import BadRequestError, ConflictError, ForbiddenError

__all__ = ["PublishedDirectory"]


class PublishedDirectory:
    """The run's signed directory in the state directory, with the publication checks (module doc)."""

    def __init__(self, state, run_id: int) -> None:
        self._state = state
        self.run_id = run_id
        self._lock = threading.Lock()
        self._current: SignedDirectory | None = state.signed_directory()

    @property
    def current(self) -> SignedDirectory | None:
        return self._current

    def publish(self, signed: SignedDirectory, enrolled: dict[int, bytes]) -> bool:
        """Store ``signed``; False when it is the one already stored. Raises BadRequestError
        (unverifiable, other run), ConflictError (other authority, older version, disagrees with
        an enrolled key)."""
        try:
            directory = signed.self_verified()
        except DirectoryRefusedError as error:
            raise BadRequestError(f"directory refused: {error}") from None
        if directory.run_id != self.run_id:
            raise BadRequestError(f"the directory is for run {directory.run_id}; this server serves run {self.run_id}")
        with self._lock:
            previous = self._current
            if previous is not None:
                if previous.to_bytes() == signed.to_bytes():
                    return False
                if not hmac.compare_digest(previous.authority_public_key, signed.authority_public_key):
                    raise ConflictError(
                        f"this run's directory is signed by authority {fingerprint(previous.authority_public_key)}; "
                        f"refusing one by {fingerprint(signed.authority_public_key)}")
                if directory.version <= previous.directory.version:
                    raise ConflictError(f"directory version {directory.version} is not newer than the published "
                                        f"version {previous.directory.version}")
            for client_id, key in enrolled.items():
                listed = directory.identity_keys.get(client_id)
                if listed is not None and not hmac.compare_digest(listed, key):
                    raise ConflictError(f"client {client_id} is enrolled with key {fingerprint(key)}, but the directory "
                                        f"lists {fingerprint(listed)}")
            self._state.save_signed_directory(signed)
            self._current = signed
            return True

    def check_enrolment(self, client_id: int, identity_public_key: bytes) -> None:
        """ForbiddenError if a published directory does not list ``client_id`` with this key."""
        current = self._current
        if current is None:
            return
        listed = current.directory.identity_keys.get(client_id)
        if listed is None:
            raise ForbiddenError(f"client {client_id} is not in run {self.run_id}'s signed directory; the "
                                 "operator's authority must list it first")
        if not hmac.compare_digest(listed, identity_public_key):
            raise ForbiddenError(f"client {client_id}'s key {fingerprint(identity_public_key)} is not the key the "
                                 f"authority signed ({fingerprint(listed)})")


def parse_signed_directory(body: bytes) -> SignedDirectory:
    """A signed directory from a request body; BadRequestError names what is malformed."""
    try:
        return SignedDirectory.from_bytes(body)
    except AuthorityError as error:
        raise BadRequestError(str(error)) from None
