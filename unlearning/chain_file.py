"""A client's record chain on its own disk, next to its key file (client side only).

Differential records (``unlearning.records``) are coded against the client's previous *stored*
record, so the client must remember that record's reconstruction across restarts. The file
holds two chains:

- ``confirmed``: the state after the last record the server confirmed it stored; the next record
  is coded against it.
- ``pending``: the state after the record uploaded last, not yet confirmed. It is adopted when the
  server confirms that round (also after a crash between the server's commit and its
  confirmation: a resumed server re-confirms its last round), and dropped otherwise.

The reconstruction is as sensitive as the client's update, so the file is created with mode 0600
and replaced atomically (a crash leaves the old file or the new one, never half of one), and a
file readable by others is refused. The format is an ``.npz`` archive read with
``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearning.deletion_errors import ChainFileError
from unlearning.records import RecordChain

CHAIN_FILE_VERSION = 1


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


def _chain_fields(prefix: str, chain: RecordChain) -> tuple[dict, dict[str, np.ndarray]]:
    meta = {"round_index": chain.round_index, "records_since_keyframe": chain.records_since_keyframe}
    arrays = {} if chain.reconstruction is None else {prefix: np.asarray(chain.reconstruction, dtype=np.float64)}
    return meta, arrays


def save_chain_state(path: str | os.PathLike[str], state: ChainState) -> None:
    """Write ``state`` atomically with mode 0600 (temporary file, fsync, rename)."""
    if not isinstance(state, ChainState):
        raise ChainFileError(f"state must be a ChainState, got {type(state).__name__}")
    path = Path(path)
    confirmed, arrays = _chain_fields("confirmed", state.confirmed)
    header = {"version": CHAIN_FILE_VERSION, "confirmed": confirmed, "pending": None}
    if state.pending is not None:
        header["pending"], pending_arrays = _chain_fields("pending", state.pending)
        arrays.update(pending_arrays)
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    from federation.keystore import write_private_file  # mkstemp, 0600, fsync, rename (no planted temp file)

    write_private_file(path, buffer.getvalue())


def _chain(meta: object, arrays, name: str, dimension: int) -> RecordChain:
    if not isinstance(meta, dict) or set(meta) != {"round_index", "records_since_keyframe"}:
        raise ChainFileError(f"the {name} chain is malformed")
    round_index = meta["round_index"]
    if round_index is None:
        return RecordChain(records_since_keyframe=int(meta["records_since_keyframe"]))
    if name not in arrays:
        raise ChainFileError(f"the {name} chain has a round but no reconstruction")
    reconstruction = arrays[name]
    if reconstruction.dtype != np.float64 or reconstruction.shape != (dimension,):
        raise ChainFileError(f"the {name} reconstruction is not ({dimension},) float64")
    reconstruction.setflags(write=False)
    return RecordChain(round_index, reconstruction, meta["records_since_keyframe"])


def load_chain_state(path: str | os.PathLike[str], dimension: int) -> ChainState:
    """The saved state, or an empty one when the file does not exist.

    Raises ChainFileError for a file readable by others or one that does not parse as a chain of
    ``dimension`` coordinates.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return ChainState()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ChainFileError(f"chain file {path} is accessible by other users (mode {oct(mode & 0o777)}); chmod 600 it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(arrays.pop("header").tobytes())
        if header.get("version") != CHAIN_FILE_VERSION:
            raise ChainFileError(f"chain file {path} has unsupported version {header.get('version')!r}")
        confirmed = _chain(header["confirmed"], arrays, "confirmed", dimension)
        pending = None if header["pending"] is None else _chain(header["pending"], arrays, "pending", dimension)
    except ChainFileError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        # ValueError includes RecordChain's own validation (UnlearningInputError).
        raise ChainFileError(f"chain file {path} is malformed: {error}") from None
    return ChainState(confirmed, pending)


def delete_chain_state(path: str | os.PathLike[str]) -> bool:
    """Remove the file (the client forgets its last reconstruction); False if it did not exist."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True
