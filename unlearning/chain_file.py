"""A client's record chain on its own disk, next to its key file (client side only).

Differential records (``unlearning.records``) are coded against the client's previous *stored*
record, so the client must remember that record's reconstruction across restarts. The state
holds two chains:

- ``confirmed``: the state after the last record the server confirmed it stored; the next record
  is coded against it.
- ``pending``: the state after the record uploaded last, not yet confirmed. The server's
  confirmation of that round adopts it (also after a crash between the server's commit and its
  confirmation: a resumed server re-confirms its last round). While a pending record is
  unconfirmed its fate is unknown to the client (stored, or dropped with the round), so the next
  record is a key frame, which opens whatever the server stored (``federation.client_runtime``).

One write per recorded round. The runtime writes the state once, right after sealing a record
and before the record leaves (the pending chain must survive a crash, or a stored record would
have no reconstruction on the client); a confirmation changes only the state in memory and
reaches the disk with the next record's write.

File format (version 2). Two fixed-size slots, each starting on a 4 KiB boundary, each holding a
whole state: a header (magic, version, dimension d, a write sequence number, both chains' round
and key-frame count), the two reconstructions as d little-endian float64 each, and a SHA-256
digest of all of it. A write overwrites the older slot in place and flushes it (one
``fdatasync``); the newer slot is untouched, so a crash mid-write leaves one intact copy, the
previous state. Reading takes the intact slot with the larger sequence number. The file's size
never changes after it is created, so the in-place write needs no rename and no directory flush;
creating the file (first record, or another model size) writes both slots to a temporary file,
flushes it, renames it into place and flushes the directory. The digest detects torn and
corrupted slots; it is not a MAC (the file lives on the client's own disk, and anyone who can
write it can also read the reconstruction it protects).

The reconstruction is as sensitive as the client's update, so the file is created with mode 0600
and a file readable by others is refused. Version 1 files (an ``.npz`` archive, read with
``allow_pickle=False``) are still read; the next write replaces them with version 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearning.deletion_errors import ChainFileError
from unlearning.errors import UnlearningInputError
from unlearning.records import RecordChain

CHAIN_FILE_VERSION = 2
_LEGACY_VERSION = 1
_MAGIC = b"FVCS"
# magic, version, flags, reserved, dimension, sequence,
# confirmed (round or -1, records since key frame), pending (round or -1, records since key frame)
_HEADER = struct.Struct("<4sBBHQQqQqQ")
_HAS_PENDING = 0x01
_DIGEST_BYTES = 32
_ALIGNMENT = 4096
_FLOAT = np.dtype("<f8")


@dataclass(frozen=True)
class ChainState:
    """``confirmed``: the chain after the last stored record; ``pending``: after the last uploaded
    one, awaiting confirmation (None when there is none)."""

    confirmed: RecordChain = RecordChain()
    pending: RecordChain | None = None

    def confirm(self, round_index: int) -> ChainState:
        """The state once the server confirmed it stored the record of ``round_index``; unchanged
        if the pending record is of another round (or there is none)."""
        if self.pending is not None and self.pending.round_index == round_index:
            return ChainState(self.pending, None)
        return self

    def with_pending(self, chain: RecordChain) -> ChainState:
        return ChainState(self.confirmed, chain)


def chain_path(key_file: str | os.PathLike[str], run_id: int | str) -> Path:
    """``<key file without suffix>.run-<run_id>.chain``, beside the key file."""
    key_file = Path(key_file)
    return key_file.with_name(f"{key_file.stem}.run-{run_id}.chain")


def slot_bytes(dimension: int) -> int:
    """The size of one slot for a model of ``dimension`` coordinates (a multiple of 4 KiB); the
    file is two slots."""
    used = _HEADER.size + 2 * _FLOAT.itemsize * dimension + _DIGEST_BYTES
    return -(-used // _ALIGNMENT) * _ALIGNMENT


def _check_dimension(dimension: object) -> int:
    if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
        raise ChainFileError(f"dimension must be a positive int, got {dimension!r}")
    return int(dimension)


# --- the seams every write and flush go through (tests count them here) -------------------


def _flush(descriptor: int, *, metadata: bool = False) -> None:
    """Make what was written to ``descriptor`` durable: its data (``fdatasync`` where the platform
    has it; the in-place write never changes the file's size), or with ``metadata`` its data and
    metadata (``fsync``: a new file, a directory after a rename)."""
    (os.fsync if metadata else getattr(os, "fdatasync", os.fsync))(descriptor)


def _write_all(descriptor: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view, offset = view[written:], offset + written


# --- slots ------------------------------------------------------------------------------------


def _chain_fields(chain: RecordChain | None, dimension: int, name: str) -> tuple[int, int, bytes]:
    """(round or -1, records since key frame, d float64 bytes) of one chain of the state."""
    if chain is None or chain.round_index is None:
        count = 0 if chain is None else chain.records_since_keyframe
        return -1, count, bytes(_FLOAT.itemsize * dimension)
    reconstruction = np.asarray(chain.reconstruction)
    if reconstruction.dtype.kind != "f" or reconstruction.shape != (dimension,):
        raise ChainFileError(f"the {name} reconstruction is not ({dimension},) float64")
    return chain.round_index, chain.records_since_keyframe, reconstruction.astype(_FLOAT, copy=False).tobytes()


def _encode_slot(state: ChainState, dimension: int, sequence: int) -> bytes:
    confirmed_round, confirmed_count, confirmed = _chain_fields(state.confirmed, dimension, "confirmed")
    pending_round, pending_count, pending = _chain_fields(state.pending, dimension, "pending")
    header = _HEADER.pack(_MAGIC, CHAIN_FILE_VERSION, _HAS_PENDING if state.pending is not None else 0, 0,
                          dimension, sequence, confirmed_round, confirmed_count, pending_round, pending_count)
    body = header + confirmed + pending
    slot = body + hashlib.sha256(body).digest()
    return slot + bytes(slot_bytes(dimension) - len(slot))


def _decode_chain(round_index: int, count: int, data: bytes, name: str) -> RecordChain:
    if round_index == -1:
        if any(data):
            raise ChainFileError(f"the {name} chain has a reconstruction but no round")
        return RecordChain(records_since_keyframe=count)
    if round_index < 0:
        raise ChainFileError(f"the {name} chain's round is negative")
    reconstruction = np.frombuffer(data, dtype=_FLOAT).astype(np.float64)
    reconstruction.setflags(write=False)
    return RecordChain(round_index, reconstruction, count)


def _decode_slot(slot: bytes) -> tuple[int, int, ChainState] | None:
    """(dimension, sequence, state) of an intact slot; None for a torn, empty or foreign one."""
    if len(slot) < _HEADER.size + _DIGEST_BYTES:
        return None
    magic, version, flags, reserved, dimension, sequence, confirmed_round, confirmed_count, pending_round, \
        pending_count = _HEADER.unpack_from(slot, 0)
    if magic != _MAGIC or version != CHAIN_FILE_VERSION or dimension < 1 or slot_bytes(dimension) != len(slot):
        return None
    end = _HEADER.size + 2 * _FLOAT.itemsize * dimension
    if hashlib.sha256(slot[:end]).digest() != slot[end:end + _DIGEST_BYTES]:
        return None
    if flags & ~_HAS_PENDING or reserved:
        raise ChainFileError("the chain file has unknown flags")
    vector = _FLOAT.itemsize * dimension
    confirmed = _decode_chain(confirmed_round, confirmed_count, slot[_HEADER.size:_HEADER.size + vector], "confirmed")
    pending_data = slot[_HEADER.size + vector:end]
    if flags & _HAS_PENDING:
        pending = _decode_chain(pending_round, pending_count, pending_data, "pending")
    elif pending_round != -1 or pending_count or any(pending_data):
        raise ChainFileError("the chain file has a pending chain it does not declare")
    else:
        pending = None
    return dimension, sequence, ChainState(confirmed, pending)


def _refuse_shared(path: Path) -> bool:
    """True when the file exists; raises ChainFileError when others may access it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ChainFileError(f"chain file {path} is accessible by other users (mode {oct(mode & 0o777)}); chmod 600 it")
    return True


class ChainFile:
    """The chain file of one client and run, for a model of ``dimension`` coordinates.

    Remembers which slot holds the newest state, so that a write after a :meth:`load` or a
    :meth:`save` touches the file exactly once (one ``pwrite`` and one flush).
    """

    def __init__(self, path: str | os.PathLike[str], dimension: int) -> None:
        self.path = Path(path)
        self.dimension = _check_dimension(dimension)
        self._sequence: int | None = None  # of the newest intact slot in a version-2 file of this size

    @property
    def sequence(self) -> int:
        """How many states were written to this file since it was created (0: no file yet).
        Reads the file if neither :meth:`load` nor :meth:`save` did."""
        if self._sequence is None:
            self.load()
        return self._sequence or 0

    def load(self) -> ChainState:
        """The saved state, or an empty one when the file does not exist.

        Raises ChainFileError for a file readable by others, one without an intact copy of a
        state, or one of another model size.
        """
        self._sequence = None
        if not _refuse_shared(self.path):
            self._sequence = 0
            return ChainState()
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise ChainFileError(f"chain file {self.path} is unreadable: {error}") from None
        if data[:2] == b"PK":
            state = _load_legacy(self.path, self.dimension)
            self._sequence = 0  # the next write replaces it with a version-2 file
            return state
        size = len(data) // 2
        try:
            slots = [] if len(data) % 2 or size % _ALIGNMENT else [_decode_slot(data[:size]), _decode_slot(data[size:])]
        except UnlearningInputError as error:  # RecordChain's own validation of an intact slot
            raise ChainFileError(f"chain file {self.path} is malformed: {error}") from None
        intact = [slot for slot in slots if slot is not None]
        if not intact:
            raise ChainFileError(f"chain file {self.path} is malformed: no intact copy of a state")
        dimension, sequence, state = max(intact, key=lambda slot: slot[1])
        if dimension != self.dimension:
            raise ChainFileError(f"chain file {self.path} holds a ({dimension},) chain, not ({self.dimension},) float64")
        self._sequence = sequence
        return state

    def save(self, state: ChainState) -> None:
        """Write ``state`` durably: in place over the older slot and one flush, or, for a new file
        (or one of another size or format), through a temporary file renamed into place."""
        if not isinstance(state, ChainState):
            raise ChainFileError(f"state must be a ChainState, got {type(state).__name__}")
        if self._sequence is None:
            try:
                self.load()
            except ChainFileError:
                _refuse_shared(self.path)  # never write into a file others may read
                self._sequence = 0  # malformed or of another model size: replaced by a new file
        sequence = self._sequence + 1
        if self._sequence > 0:
            slot = _encode_slot(state, self.dimension, sequence)
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
            except FileNotFoundError:  # deleted since it was read (the client forgot its chain)
                sequence = 1
            else:
                try:
                    _write_all(descriptor, slot, (sequence % 2) * len(slot))
                    _flush(descriptor)
                finally:
                    os.close(descriptor)
        if sequence == 1:
            self._create(_encode_slot(state, self.dimension, sequence))
        self._sequence = sequence

    def _create(self, first_slot: bytes) -> None:
        # A fresh temporary name (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, 0600): a file or symlink
        # planted at a predictable path can neither keep a looser mode nor redirect the write.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.is_symlink():
            raise ChainFileError(f"chain file {self.path} is a symbolic link; refusing to write through it")
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            try:
                # Sequence 1 goes to slot 1; slot 0 is zeros (no intact state) until the next write.
                _write_all(descriptor, bytes(len(first_slot)) + first_slot, 0)
                _flush(descriptor, metadata=True)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            _flush(directory, metadata=True)  # the rename itself must survive a power cut
        finally:
            os.close(directory)


def _load_legacy(path: Path, dimension: int) -> ChainState:
    """A version-1 file: an ``.npz`` archive with a JSON header (read-only support)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(arrays.pop("header").tobytes())
        if header.get("version") != _LEGACY_VERSION:
            raise ChainFileError(f"chain file {path} has unsupported version {header.get('version')!r}")

        def chain(meta: object, name: str) -> RecordChain:
            if not isinstance(meta, dict) or set(meta) != {"round_index", "records_since_keyframe"}:
                raise ChainFileError(f"the {name} chain is malformed")
            if meta["round_index"] is None:
                return RecordChain(records_since_keyframe=int(meta["records_since_keyframe"]))
            if name not in arrays:
                raise ChainFileError(f"the {name} chain has a round but no reconstruction")
            reconstruction = arrays[name]
            if reconstruction.dtype != np.float64 or reconstruction.shape != (dimension,):
                raise ChainFileError(f"the {name} reconstruction is not ({dimension},) float64")
            reconstruction.setflags(write=False)
            return RecordChain(meta["round_index"], reconstruction, meta["records_since_keyframe"])

        confirmed = chain(header["confirmed"], "confirmed")
        pending = None if header["pending"] is None else chain(header["pending"], "pending")
    except ChainFileError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        # ValueError includes RecordChain's own validation (UnlearningInputError).
        raise ChainFileError(f"chain file {path} is malformed: {error}") from None
    return ChainState(confirmed, pending)


def load_chain_state(path: str | os.PathLike[str], dimension: int) -> ChainState:
    """The saved state of a model of ``dimension`` coordinates, or an empty one when the file
    does not exist (:meth:`ChainFile.load`)."""
    return ChainFile(path, dimension).load()


def save_chain_state(path: str | os.PathLike[str], state: ChainState, dimension: int) -> None:
    """Write ``state`` durably (:meth:`ChainFile.save`)."""
    ChainFile(path, dimension).save(state)


def delete_chain_state(path: str | os.PathLike[str]) -> bool:
    """Remove the file (the client forgets its last reconstruction); False if it did not exist."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


__all__ = ["CHAIN_FILE_VERSION", "ChainFile", "ChainState", "chain_path", "delete_chain_state",
           "load_chain_state", "save_chain_state", "slot_bytes"]
