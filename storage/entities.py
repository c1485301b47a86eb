"""The typed values the repository accepts and returns (frozen dataclasses; no ORM objects leak).

Write types validate on construction and encode their arrays there, so a round's CPU work
(entropy coding, fp16 conversion) happens before its transaction takes the write lock, and a bad
input fails before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import numpy as np

from storage.codecs import BF16, DEFAULT_ZSTD_LEVEL, FP16, RAW, ZIGZAG_ZSTD, as_numpy, encode_array
from storage.errors import StorageValueError
from storage.schema import AGGREGATE_KINDS, CHECKPOINT_SOURCES, LEDGER_STREAMS, ROUND_STATUSES
from storage.validation import (
    check_bytes,
    check_choice,
    check_float,
    check_ids,
    check_int,
    check_json_object,
    check_text,
    check_time,
)

CHECKPOINT_CODECS = (FP16, BF16, RAW)
SHA256_BYTES = 32
PUBLIC_KEY_BYTES = 32


def _set(instance: object, name: str, value: Any) -> None:
    object.__setattr__(instance, name, value)  # normalizing a frozen dataclass's own fields


# --- writes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateWrite:
    """One aggregate array of a round, encoded on construction.

    ``values``: any shape; ``(m,) int64`` summed lattice coordinates for kind ``lattice_sum``
    (default codec ``zigzag-zstd``), ``(d,) float32`` for kind ``mean_update`` (default codec
    ``raw``, exact; ``fp16``/``bf16`` to halve it). ``name`` distinguishes several aggregates of
    one round (e.g. one per FedP3 layer group).
    """

    values: InitVar[Any]
    kind: str = "lattice_sum"
    name: str = "update"
    codec: str | None = None
    zstd_level: int = DEFAULT_ZSTD_LEVEL
    blob: bytes = field(init=False, repr=False)
    element_count: int = field(init=False)
    sha256: str = field(init=False)

    def __post_init__(self, values: Any) -> None:
        check_choice(self.kind, "aggregate kind", AGGREGATE_KINDS)
        check_text(self.name, "aggregate name", max_length=100)
        array = as_numpy(values)
        codec = self.codec or (ZIGZAG_ZSTD if self.kind == "lattice_sum" else RAW)
        if self.kind == "lattice_sum" and array.dtype.kind not in "iu":
            raise StorageValueError(f"a lattice_sum aggregate holds integers, got {array.dtype}")
        _set(self, "codec", codec)
        _set(self, "blob", encode_array(array, codec, level=self.zstd_level))
        _set(self, "element_count", int(array.size))
        _set(self, "sha256", hashlib.sha256(self.blob).hexdigest())


@dataclass(frozen=True)
class CheckpointWrite:
    """A model state: ``tensors`` maps parameter names to arrays or torch tensors (a
    ``state_dict``, or ``{"flat": vector}``), encoded with ``codec`` (fp16 by default) on
    construction. Integer tensors (e.g. BatchNorm's ``num_batches_tracked``) are stored raw.

    ``round_index`` is the last round folded into the model (-1: the initial model); inside a
    RoundWrite leave it None (it is that round). ``source``: initial, training or unlearning.
    """

    tensors: InitVar[Mapping[str, Any]]
    codec: str = FP16
    source: str = "training"
    round_index: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    encoded: tuple[tuple[str, bytes], ...] = field(init=False, repr=False)
    parameter_count: int = field(init=False)
    byte_size: int = field(init=False)
    sha256: str = field(init=False)

    def __post_init__(self, tensors: Mapping[str, Any]) -> None:
        check_choice(self.codec, "checkpoint codec", CHECKPOINT_CODECS)
        check_choice(self.source, "checkpoint source", CHECKPOINT_SOURCES)
        if self.round_index is not None:
            _set(self, "round_index", check_int(self.round_index, "checkpoint round_index", minimum=-1))
        _set(self, "details", check_json_object(self.details, "checkpoint details"))
        if not isinstance(tensors, Mapping) or not tensors:
            raise StorageValueError("checkpoint tensors must be a non-empty mapping of name -> array")
        encoded = []
        count = 0
        digest = hashlib.sha256()
        for name, tensor in tensors.items():
            check_text(name, "checkpoint tensor name", max_length=200)
            array = as_numpy(tensor)
            codec = self.codec if array.dtype.kind == "f" else RAW
            blob = encode_array(array, codec)
            encoded.append((name, blob))
            count += int(array.size)
            digest.update(hashlib.sha256(name.encode()).digest() + hashlib.sha256(blob).digest())
        _set(self, "encoded", tuple(encoded))
        _set(self, "parameter_count", count)
        _set(self, "byte_size", sum(len(blob) for _, blob in encoded))
        _set(self, "sha256", digest.hexdigest())


@dataclass(frozen=True)
class SealedRecordWrite:
    """A client's sealed history record for one round: opaque AEAD ciphertext plus public
    metadata (parent link, seed id, scale, ...; JSON). ``parameter_count`` is the number of model
    parameters the record covers (public: the model size), for bits-per-parameter reporting."""

    client_id: int
    ciphertext: bytes
    metadata: Mapping[str, Any] = field(default_factory=dict)
    parameter_count: int | None = None

    def __post_init__(self) -> None:
        _set(self, "client_id", check_int(self.client_id, "record client_id"))
        _set(self, "ciphertext", check_bytes(self.ciphertext, "record ciphertext"))
        if not self.ciphertext:
            raise StorageValueError("a sealed record's ciphertext is empty")
        _set(self, "metadata", check_json_object(self.metadata, "record metadata"))
        if self.parameter_count is not None:
            _set(self, "parameter_count", check_int(self.parameter_count, "record parameter_count", minimum=1))


@dataclass(frozen=True)
class LedgerEntryWrite:
    """One privacy-budget charge: the same fields as ``privacy.ledger.LedgerEntry``, so
    ``LedgerEntryWrite(**dataclasses.asdict(entry))`` converts one. ``event_json`` is the
    dp-accounting-style event description (``privacy.events.event_to_json``)."""

    client_id: int
    round_index: int
    stream: str
    event_json: Mapping[str, Any]
    epsilon_after: float
    delta: float

    def __post_init__(self) -> None:
        _set(self, "client_id", check_int(self.client_id, "ledger client_id"))
        _set(self, "round_index", check_int(self.round_index, "ledger round_index"))
        check_choice(self.stream, "ledger stream", LEDGER_STREAMS)
        _set(self, "event_json", check_json_object(self.event_json, "ledger event_json"))
        _set(self, "epsilon_after", check_float(self.epsilon_after, "epsilon_after", minimum=0.0))
        _set(self, "delta", check_float(self.delta, "ledger delta", minimum=0.0, below=1.0))


@dataclass(frozen=True)
class RoundWrite:
    """Everything one round persists, committed by ``Repository.commit_round`` in one transaction.

    ``cohort``: the sampled clients; ``survivors``: those whose input is in the sum;
    ``dropouts``: stage name -> clients lost at that stage; ``stage``: the last stage reached
    (``status="aborted"`` rounds record where they stopped and carry no aggregate);
    ``client_weights``: client id -> aggregation weight (public, for unlearning's β_t);
    ``parameters``: the round's public parameters (codec, bits, noise, ...; JSON);
    ``bytes_uploaded``: total uplink bytes of the round. Times are timezone-aware.
    ``audit_details`` are merged into the round's audit-log entry.
    """

    round_index: int
    cohort: Sequence[int]
    survivors: Sequence[int]
    started_at: datetime
    finished_at: datetime
    status: str = "completed"
    stage: str = "completed"
    dropouts: Mapping[str, Sequence[int]] = field(default_factory=dict)
    client_weights: Mapping[int, float] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    bytes_uploaded: int = 0
    aggregates: Sequence[AggregateWrite] = ()
    checkpoint: CheckpointWrite | None = None
    sealed_records: Sequence[SealedRecordWrite] = ()
    ledger_entries: Sequence[LedgerEntryWrite] = ()
    audit_details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        index = check_int(self.round_index, "round_index")
        _set(self, "round_index", index)
        check_choice(self.status, "round status", ROUND_STATUSES)
        check_text(self.stage, "round stage", max_length=64)
        cohort = check_ids(self.cohort, "cohort")
        if not cohort:
            raise StorageValueError("a round's cohort is empty")
        survivors = check_ids(self.survivors, "survivors")
        if not set(survivors) <= set(cohort):
            raise StorageValueError(f"survivors {sorted(set(survivors) - set(cohort))} are not in the cohort")
        _set(self, "cohort", cohort)
        _set(self, "survivors", survivors)
        if not isinstance(self.dropouts, Mapping):
            raise StorageValueError("dropouts must map stage name -> client ids")
        dropouts = {}
        for stage, ids in self.dropouts.items():
            check_text(stage, "dropout stage", max_length=64)
            dropped = check_ids(ids, f"dropouts[{stage!r}]")
            if not set(dropped) <= set(cohort):
                raise StorageValueError(f"clients {sorted(set(dropped) - set(cohort))} dropped at {stage!r} are not in the cohort")
            dropouts[stage] = dropped
        _set(self, "dropouts", MappingProxyType(dropouts))
        if not isinstance(self.client_weights, Mapping):
            raise StorageValueError("client_weights must map client id -> weight")
        weights = {}
        for client, weight in self.client_weights.items():
            client = check_int(client, "client_weights key")
            if client not in cohort:
                raise StorageValueError(f"client_weights names client {client}, which is not in the cohort")
            weights[client] = check_float(weight, f"client_weights[{client}]", minimum=0.0)
        _set(self, "client_weights", MappingProxyType(weights))
        _set(self, "parameters", check_json_object(self.parameters, "round parameters"))
        _set(self, "audit_details", check_json_object(self.audit_details, "audit_details"))
        _set(self, "bytes_uploaded", check_int(self.bytes_uploaded, "bytes_uploaded"))
        started, finished = check_time(self.started_at, "started_at"), check_time(self.finished_at, "finished_at")
        if finished < started:
            raise StorageValueError("finished_at is before started_at")
        self._check_parts(cohort)

    def _check_parts(self, cohort: tuple[int, ...]) -> None:
        aggregates = tuple(self.aggregates)
        if not all(isinstance(a, AggregateWrite) for a in aggregates):
            raise StorageValueError("aggregates must be AggregateWrite values")
        names = [a.name for a in aggregates]
        if len(set(names)) != len(names):
            raise StorageValueError(f"two aggregates share a name: {names}")
        if self.status == "completed" and not aggregates:
            raise StorageValueError("a completed round needs at least one aggregate")
        if self.status == "aborted" and aggregates:
            raise StorageValueError("an aborted round has no aggregate")
        _set(self, "aggregates", aggregates)
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, CheckpointWrite):
                raise StorageValueError("checkpoint must be a CheckpointWrite")
            if self.checkpoint.round_index not in (None, self.round_index):
                raise StorageValueError("a round's checkpoint must be of that round (leave round_index None)")
        records = tuple(self.sealed_records)
        if not all(isinstance(r, SealedRecordWrite) for r in records):
            raise StorageValueError("sealed_records must be SealedRecordWrite values")
        record_clients = [r.client_id for r in records]
        if len(set(record_clients)) != len(record_clients):
            raise StorageValueError("a client has two sealed records in one round")
        if not set(record_clients) <= set(cohort):
            raise StorageValueError(f"sealed records for clients {sorted(set(record_clients) - set(cohort))} outside the cohort")
        _set(self, "sealed_records", records)
        entries = tuple(self.ledger_entries)
        if not all(isinstance(e, LedgerEntryWrite) for e in entries):
            raise StorageValueError("ledger_entries must be LedgerEntryWrite values")
        for entry in entries:
            if entry.round_index != self.round_index:
                raise StorageValueError(f"ledger entry of round {entry.round_index} inside round {self.round_index}")
            if entry.client_id not in cohort:
                raise StorageValueError(f"ledger entry for client {entry.client_id}, who is not in the cohort")
        _set(self, "ledger_entries", entries)


@dataclass(frozen=True)
class ClientEnrolment:
    """What the server stores about a client at enrolment.

    ``identity_public_key``: the client's raw Ed25519 public key (32 B). ``history_commitment``:
    SHA-256 commitment to its history secret (32 B; docs/ALGORITHMS.md §6.4). ``epsilon_budget`` and
    ``delta``: its privacy budget (ε > 0 at δ in [0, 1)).
    """

    client_id: int
    identity_public_key: bytes
    history_commitment: bytes
    epsilon_budget: float
    delta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_id", check_int(self.client_id, "client_id"))
        object.__setattr__(
            self, "identity_public_key", check_bytes(self.identity_public_key, "identity_public_key", length=PUBLIC_KEY_BYTES)
        )
        object.__setattr__(
            self, "history_commitment", check_bytes(self.history_commitment, "history_commitment", length=SHA256_BYTES)
        )
        object.__setattr__(self, "epsilon_budget", check_float(self.epsilon_budget, "epsilon_budget", positive=True))
        object.__setattr__(self, "delta", check_float(self.delta, "delta", minimum=0.0, below=1.0))


# --- reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    id: int
    name: str | None
    config: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClientInfo:
    run_id: int
    client_id: int
    identity_public_key: bytes
    history_commitment: bytes
    enrolled_at: datetime
    status: str
    deleted_at: datetime | None
    epsilon_budget: float
    delta: float

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class RoundInfo:
    run_id: int
    round_index: int
    status: str
    stage: str
    cohort: tuple[int, ...]
    survivors: tuple[int, ...]
    dropouts: dict[str, tuple[int, ...]]
    client_weights: dict[int, float]
    parameters: dict[str, Any]
    bytes_uploaded: int
    started_at: datetime
    finished_at: datetime
    committed_at: datetime


@dataclass(frozen=True)
class AggregateRead:
    run_id: int
    round_index: int
    name: str
    kind: str
    codec: str
    values: np.ndarray
    byte_size: int
    sha256: str

    @property
    def bits_per_parameter(self) -> float:
        return 8.0 * self.byte_size / max(self.values.size, 1)


@dataclass(frozen=True)
class CheckpointInfo:
    id: int
    run_id: int
    round_index: int
    model_version: int
    source: str
    codec: str
    parameter_count: int
    byte_size: int
    sha256: str
    details: dict[str, Any]
    created_at: datetime

    @property
    def bits_per_parameter(self) -> float:
        return 8.0 * self.byte_size / max(self.parameter_count, 1)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint's metadata and its tensors (numpy, decoded to their stored dtype: fp16 and
    bf16 checkpoints come back as the float dtype they were saved from). ``as_torch()`` gives a
    ``state_dict``."""

    info: CheckpointInfo
    tensors: dict[str, np.ndarray]

    def as_torch(self) -> dict[str, Any]:
        import torch  # only the caller who wants tensors pays for the import

        return {name: torch.from_numpy(array) for name, array in self.tensors.items()}


@dataclass(frozen=True)
class SealedRecordRead:
    run_id: int
    round_index: int
    client_id: int
    ciphertext: bytes
    record_size: int
    metadata: dict[str, Any]
    parameter_count: int | None
    created_at: datetime


@dataclass(frozen=True)
class LedgerEntryRead:
    run_id: int
    client_id: int
    sequence: int
    round_index: int
    stream: str
    event_json: dict[str, Any]
    epsilon_after: float
    delta: float
    created_at: datetime
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class DeletionRequestInfo:
    id: int
    run_id: int
    client_id: int
    state: str
    reason: str | None
    details: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def is_open(self) -> bool:
        return self.state not in ("shredded", "failed")


@dataclass(frozen=True)
class AuditEntry:
    run_id: int
    sequence: int
    event: str
    round_index: int | None
    client_id: int | None
    payload: dict[str, Any]
    created_at: datetime
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class ShredResult:
    """What ``shred_client_records`` destroyed.

    ``compacted``: whether the storage engine was made to drop its copies of the deleted rows
    afterwards: on SQLite the write-ahead log was checkpointed and truncated (deleted pages are
    zeroed by ``secure_delete``); on PostgreSQL the table was vacuumed. False when a concurrent
    reader prevented it; the next shred or checkpoint retries.
    """

    run_id: int
    client_id: int
    records_deleted: int
    bytes_deleted: int
    compacted: bool


@dataclass(frozen=True)
class TableUsage:
    """Payload bytes one table holds for a run (blobs and JSON text; not index or page overhead)
    and, for tables of model-sized arrays, the parameters they cover."""

    table: str
    rows: int
    payload_bytes: int
    parameters: int | None = None

    @property
    def bits_per_parameter(self) -> float | None:
        if not self.parameters:
            return None
        return 8.0 * self.payload_bytes / self.parameters


@dataclass(frozen=True)
class StorageUsage:
    run_id: int
    tables: tuple[TableUsage, ...]
    database_bytes: int | None

    @property
    def payload_bytes(self) -> int:
        return sum(table.payload_bytes for table in self.tables)

    def table(self, name: str) -> TableUsage:
        for table in self.tables:
            if table.table == name:
                return table
        raise StorageValueError(f"no table {name!r} in the usage report")
