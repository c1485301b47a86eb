"""The in-flight round journal: what a restarted server needs to resume the open round.

The SecAgg+ server state machine is deterministic given its ``RoundConfig`` and the messages it
accepted, in order, with the points where each stage was closed. The round manager appends each
of these to this journal, flushed and fsync'ed *before* it acknowledges the client, so after a
crash a fresh ``SecAggServer`` replayed from the journal is in exactly the state the clients
were told about. A committed round's journal is deleted; a journal for a round that is already
in the database (crash between commit and delete) is stale and discarded.

File format (all integers big-endian)::

    b"FVJ1"                                      magic
    record*: u32 body length | u32 CRC-32(body) | body
    body:    u32 meta length | meta (JSON object, UTF-8) | blob (the rest)

A torn or corrupt record (crash mid-append) ends the journal: it and anything after it are cut
off on the next open. Because the file is append-only, one fsync makes every earlier append
durable: callers may append under their own lock and ``sync`` after releasing it (group commit;
many clients' fsyncs then overlap), acknowledging a record only once a sync that began after its
append has returned. CRC-32 detects torn writes; it is not a security boundary (the file lives
in the server's own state directory, mode 0600).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.service.errors import StateDirectoryError

MAGIC = b"FVJ1"
MAX_RECORD_BYTES = 2**31
_HEADER = struct.Struct(">II")
_META_LENGTH = struct.Struct(">I")

__all__ = ["JournalRecord", "RoundJournal"]


@dataclass(frozen=True)
class JournalRecord:
    """One journal entry: ``kind`` (``start``, ``report``, ``message``, ``close``), JSON ``meta``, raw ``blob``."""

    kind: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    blob: bytes = b""


class RoundJournal:
    """Append-only, fsync'ed journal of the open round at ``path`` (created with mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle = None
        self._handle_lock = threading.Lock()  # sync() may run beside start()/clear() in other threads

    # --- writing -----------------------------------------------------------------------------

    def start(self, record: JournalRecord) -> None:
        """Begin a new round's journal (replacing any previous one) with its first record."""
        self.close()
        # A fresh mkstemp name (O_EXCL|O_NOFOLLOW, 0600): nothing planted at a fixed path is written through.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".new", dir=self.path.parent)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(MAGIC + _encode(record))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        _fsync_directory(self.path.parent)
        with self._handle_lock:
            self._open_for_append()

    def append(self, record: JournalRecord, *, sync: bool = True) -> None:
        """Append one record; durable on return unless ``sync=False`` (then call :meth:`sync`)."""
        with self._handle_lock:
            if self._handle is None:
                self._open_for_append()
            self._handle.write(_encode(record))
            self._handle.flush()
        if sync:
            self.sync()

    def sync(self) -> None:
        """Make every record appended so far durable. A journal closed meanwhile (its round was
        committed or abandoned) needs nothing more: what it held is in the database or moot."""
        with self._handle_lock:
            handle = self._handle
            if handle is not None:
                os.fsync(handle.fileno())

    def clear(self) -> None:
        """Delete the journal (the round is committed or abandoned)."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        _fsync_directory(self.path.parent)

    def close(self) -> None:
        with self._handle_lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def _open_for_append(self) -> None:
        if not self.path.exists():
            raise StateDirectoryError(f"round journal {self.path} does not exist; start a round first")
        self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open across appends

    # --- reading -----------------------------------------------------------------------------

    def read(self) -> list[JournalRecord]:
        """Every intact record, in order; a torn or corrupt tail is cut off the file."""
        self.close()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if not data.startswith(MAGIC):
            # Not even the magic survived: nothing in it was acknowledged to anyone.
            self.clear()
            return []
        records, offset = [], len(MAGIC)
        while offset + _HEADER.size <= len(data):
            length, checksum = _HEADER.unpack_from(data, offset)
            body = data[offset + _HEADER.size: offset + _HEADER.size + length]
            if len(body) != length or zlib.crc32(body) != checksum:
                break
            try:
                records.append(_decode(body))
            except ValueError:
                break
            offset += _HEADER.size + length
        if offset != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)
                handle.flush()
                os.fsync(handle.fileno())
        return records


def _encode(record: JournalRecord) -> bytes:
    meta = json.dumps({"kind": record.kind, **dict(record.meta)}, sort_keys=True, separators=(",", ":")).encode()
    body = _META_LENGTH.pack(len(meta)) + meta + bytes(record.blob)
    if len(body) >= MAX_RECORD_BYTES:
        raise StateDirectoryError(f"journal record of {len(body)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _decode(body: bytes) -> JournalRecord:
    if len(body) < _META_LENGTH.size:
        raise ValueError("record shorter than its meta length")
    (meta_length,) = _META_LENGTH.unpack_from(body)
    end = _META_LENGTH.size + meta_length
    if end > len(body):
        raise ValueError("meta length beyond the record")
    meta = json.loads(body[_META_LENGTH.size:end])
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise ValueError("meta is not an object with a kind")
    kind = meta.pop("kind")
    return JournalRecord(kind, meta, body[end:])


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
