"""The server's state directory: its secrets, the run it serves, the open round's journal.

Layout (the directory and every file in it are private to the server's user, 0700/0600)::

    server.json           {"version": 1, "run_id": R, "operator_token": ..., "enrolment_key": hex}
    round-journal.bin     the open round (``federation.service.journal``), absent between rounds
    directory.json        the run's directory as the enrolment authority signed it (published by the
                          operator, ``federation.authority``); the server only stores and serves it

The operator token may instead come from the environment (``FEDVAULT_OPERATOR_TOKEN``); then it is
never written to disk. Secrets come from the OS CSPRNG (``secrets``).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from federation.keystore import write_private_file
from federation.service.auth import ENROLMENT_KEY_BYTES
from federation.service.errors import StateDirectoryError

STATE_VERSION = 1
OPERATOR_TOKEN_ENV = "FEDVAULT_OPERATOR_TOKEN"
MIN_OPERATOR_TOKEN_LENGTH = 16

__all__ = ["OPERATOR_TOKEN_ENV", "ServerSecrets", "StateDirectory", "write_private_file"]


@dataclass(frozen=True)
class ServerSecrets:
    """The operator token and the key enrolment tokens are MACs under."""

    operator_token: str
    enrolment_key: bytes

    def __repr__(self) -> str:  # never print secrets in logs or tracebacks
        return "ServerSecrets(<redacted>)"


class StateDirectory:
    """Files under one state directory (created 0700 if missing; refused if others can read it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = self.path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StateDirectoryError(
                f"state directory {self.path} is accessible by other users (mode {oct(mode & 0o777)}); chmod 700 it")

    @property
    def journal_path(self) -> Path:
        return self.path / "round-journal.bin"

    @property
    def _server_file(self) -> Path:
        return self.path / "server.json"

    # --- server.json -------------------------------------------------------------------------

    def _read(self) -> dict:
        try:
            raw = self._server_file.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            values = json.loads(raw)
            if not isinstance(values, dict) or values.get("version") != STATE_VERSION:
                raise ValueError("unsupported version")
            return values
        except ValueError as error:
            raise StateDirectoryError(f"{self._server_file} is malformed: {error}") from None

    def _write(self, values: dict) -> None:
        write_private_file(self._server_file, json.dumps({"version": STATE_VERSION, **values}, indent=1).encode())

    def run_id(self) -> int | None:
        """The run this directory serves, or None before the first start."""
        value = self._read().get("run_id")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise StateDirectoryError(f"{self._server_file}: run_id must be an int")
        return value

    def set_run_id(self, run_id: int) -> None:
        values = self._read()
        values.pop("version", None)
        values["run_id"] = int(run_id)
        self._write(values)

    def secrets(self) -> ServerSecrets:
        """The server's secrets, generated on first use; the environment's operator token wins."""
        values = self._read()
        values.pop("version", None)
        changed = False
        if "enrolment_key" not in values:
            values["enrolment_key"] = secrets.token_bytes(ENROLMENT_KEY_BYTES).hex()
            changed = True
        token = os.environ.get(OPERATOR_TOKEN_ENV)
        if token is None:
            if "operator_token" not in values:
                values["operator_token"] = secrets.token_urlsafe(32)
                changed = True
            token = values["operator_token"]
        if len(token) < MIN_OPERATOR_TOKEN_LENGTH:
            raise StateDirectoryError(
                f"the operator token must be at least {MIN_OPERATOR_TOKEN_LENGTH} characters")
        if changed:
            self._write(values)
        try:
            key = bytes.fromhex(values["enrolment_key"])
        except (TypeError, ValueError):
            key = b""
        if len(key) != ENROLMENT_KEY_BYTES:
            raise StateDirectoryError(f"{self._server_file}: enrolment_key must be {ENROLMENT_KEY_BYTES} bytes of hex")
        return ServerSecrets(operator_token=token, enrolment_key=key)

    @property
    def directory_path(self) -> Path:
        return self.path / "directory.json"

    def signed_directory(self):
        """The published ``SignedDirectory``, or None before the operator published one."""
        from federation.authority import AuthorityError, SignedDirectory

        try:
            raw = self.directory_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return SignedDirectory.from_bytes(raw)
        except AuthorityError as error:
            raise StateDirectoryError(f"{self.directory_path}: {error}") from None

    def save_signed_directory(self, signed) -> None:
        write_private_file(self.directory_path, signed.to_bytes())

    @property
    def operator_token_location(self) -> str:
        if os.environ.get(OPERATOR_TOKEN_ENV) is not None:
            return f"${OPERATOR_TOKEN_ENV}"
        return f"{self._server_file} (operator_token)"


