"""The HTTP API's JSON bodies, as pydantic models (they are also the served OpenAPI schema).

Requests forbid unknown fields and bound every value (ids, lengths, list sizes), so malformed
input is a 422 that names the field, never a server error. Binary values travel as lowercase
hex (keys, commitments, secrets) or base64 (protocol messages, which can be large).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_CLIENT_ID = 2**32 - 1
MAX_ROUND_INDEX = 2**62
HEX32 = r"^[0-9a-f]{64}$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorResponse(_Response):
    detail: str = Field(description="What was wrong, in words.")


class HealthResponse(_Response):
    status: str
    run_id: int


class RunResponse(_Response):
    """The run's public parameters: what a client needs to build its local runtime."""

    run_id: int
    status: str
    created_at: datetime = Field(description="When the run was created (names client-side state files).")
    rounds: int
    next_round: int
    config: dict[str, Any]
    dimension: int = Field(description="d, model parameters.")
    coordinates: int = Field(description="m, lattice coordinates per masked vector.")
    bits: int = Field(description="b, the secure sum is mod 2**b.")
    step: float
    lattice: str
    max_message_bytes: int = Field(description="Largest protocol message body accepted.")


class EnrolRequest(_Request):
    """Bind an Ed25519 identity key to a client id with the operator-issued enrolment token.

    The request itself must be signed with the key being enrolled (proof of possession)."""

    client_id: int = Field(ge=0, le=MAX_CLIENT_ID)
    enrolment_token: str = Field(min_length=1, max_length=128)
    identity_public_key: str = Field(pattern=HEX32, description="Raw Ed25519 public key, hex.")
    history_commitment: str = Field(pattern=HEX32, description="SHA-256 commitment to the history secret, hex.")


class EnrolResponse(_Response):
    run_id: int
    client_id: int
    status: str = Field(description="'enrolled', or 'already-enrolled' for a repeat with the same key.")


class LastRound(_Response):
    round_index: int
    status: str
    cohort: int
    survivors: int
    reason: str | None = None


class TaskResponse(_Response):
    """What the client should do now. ``request`` (base64) is its SecAgg+ request of the open stage."""

    run_status: str
    version: int
    round_index: int | None = None
    stage: str | None = None
    selected: bool = False
    answered: bool = False
    request: str | None = None
    plan: str | None = None
    record: bool = Field(default=False, description="Upload a sealed history record this round.")
    stage_seconds_left: float | None = None
    last_round: LastRound | None = None
    record_stored: bool = Field(default=False, description="Your record of last_round was committed.")


class DirectoryResponse(_Response):
    identity_keys: dict[str, str] = Field(description="client id -> enrolled Ed25519 public key (hex).")
    signed_directory: dict[str, Any] | None = Field(
        default=None, description="The run's directory as the enrolment authority signed it (what clients use; "
                                  "null until the operator publishes one).")


class PublishDirectoryResponse(_Response):
    run_id: int
    version: int
    clients: int
    authority_fingerprint: str
    status: str = Field(description="'published', or 'unchanged' for a repeat of the stored directory.")


class TrainReportRequest(_Request):
    num_samples: int = Field(ge=0, le=2**31)
    train_loss: float | None = Field(default=None, allow_inf_nan=False)
    sample_events: list[dict[str, Any]] = Field(default_factory=list, max_length=64)


class AcceptedResponse(_Response):
    round_index: int
    stage: str
    duplicate: bool = Field(description="True when this exact message had already been accepted.")


class RoundStatusResponse(_Response):
    round_index: int
    state: str = Field(description="'open', 'completed' or 'aborted'.")
    stage: str | None = None
    cohort: int
    survivors: int | None = None
    reason: str | None = None
    stage_seconds_left: float | None = None


class LedgerEntryResponse(_Response):
    client_id: int
    sequence: int
    round_index: int
    stream: str
    event_json: dict[str, Any]
    epsilon_after: float
    delta: float
    created_at: datetime
    entry_hash: str


class DeletionRequestResponse(_Response):
    """A deletion request's state: requested → opened → unlearned → shredded (or failed)."""

    request_id: int
    client_id: int
    state: str
    reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    model_version: int | None = Field(default=None, description="The unlearned model's version.")
    records_shredded: int | None = None
    records_opened: int | None = None


class RoundInfoResponse(_Response):
    round_index: int
    status: str
    stage: str
    cohort: list[int]
    survivors: list[int]
    dropouts: dict[str, list[int]]
    parameters: dict[str, Any]
    bytes_uploaded: int
    started_at: datetime
    finished_at: datetime
    committed_at: datetime


class OpenRoundResponse(_Response):
    round_index: int
    stage: str | None
    cohort: list[int]
    pending: list[int]
    resumed: bool
    stage_seconds_left: float
    upload_bytes: int


class AuditEntryResponse(_Response):
    sequence: int
    event: str
    round_index: int | None
    client_id: int | None
    payload: dict[str, Any]
    created_at: datetime
    prev_hash: str
    entry_hash: str


class ClientInfoResponse(_Response):
    client_id: int
    status: str
    identity_public_key: str
    enrolled_at: datetime
    deleted_at: datetime | None
    epsilon_budget: float
    delta: float


class VerifyResponse(_Response):
    audit_ok: bool
    audit_entries_checked: int
    audit_first_bad: str | None = None
    ledger_ok: bool
    ledger_entries_checked: int
    ledger_first_bad: str | None = None


class TokenRequest(_Request):
    client_ids: list[Annotated[int, Field(ge=0, le=MAX_CLIENT_ID)]] = Field(min_length=1, max_length=100_000)


class TokenResponse(_Response):
    run_id: int
    tokens: dict[str, str] = Field(description="client id -> enrolment token.")
