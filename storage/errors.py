"""The one exception hierarchy of ``storage``.

Every error ``storage`` raises derives from :class:`StorageError`, so the CLI can turn any of them
into one readable line. Callers that need to react to a specific condition (a round committed out
of order, a deleted client, a corrupt blob) catch the specific subclass.
"""


class StorageError(Exception):
    """Base of every error raised by ``storage``."""


class StorageValueError(StorageError, ValueError):
    """A public function was given an argument of the wrong type, shape or range."""


# --- database and schema -------------------------------------------------------------------------


class DatabaseConfigurationError(StorageError):
    """The database path or URL cannot be used (malformed URL, missing driver, unreachable)."""


class DatabaseOperationalError(StorageError):
    """The database failed an operation: a lock held past the busy timeout, a lost connection,
    a full disk. The transaction was rolled back; nothing of it was written."""


class SchemaError(StorageError):
    """The database schema is not the one this version of fedvault expects."""


class SchemaMissingError(SchemaError):
    """The database holds no fedvault schema and was opened without permission to create one."""


class SchemaOutOfDateError(SchemaError):
    """The schema is at an older migration than this fedvault's; ``fedvault db upgrade`` fixes it."""


class SchemaUnknownError(SchemaError):
    """The schema revision is unknown to this fedvault (written by a newer version, or foreign)."""


# --- blob codecs ---------------------------------------------------------------------------------


class CodecError(StorageError):
    """Base of blob encoding and decoding errors."""


class BlobEncodingError(CodecError, ValueError):
    """An array cannot be encoded with the requested codec (wrong dtype, overflow, non-finite)."""


class CorruptBlobError(CodecError):
    """A stored blob is damaged: bad magic, unknown codec, truncated, or its checksum fails."""


# --- rows ----------------------------------------------------------------------------------------


class NotFoundError(StorageError, LookupError):
    """A row that the caller named does not exist."""


class RunNotFoundError(NotFoundError):
    """No run has the given id."""


class ClientNotFoundError(NotFoundError):
    """The client is not enrolled in the run."""


class RoundNotFoundError(NotFoundError):
    """The round has not been committed."""


class DeletionRequestNotFoundError(NotFoundError):
    """No deletion request has the given id."""


class ConflictError(StorageError):
    """The write contradicts what is already stored."""


class DuplicateError(ConflictError):
    """A row with the same key already exists (client enrolled twice, round committed twice)."""


class RoundOrderError(ConflictError):
    """A round was committed out of order: its index is not the last committed index + 1."""


class ClientDeletedError(ConflictError):
    """The client was deleted (unlearned); nothing new may be written for it."""


class InvalidTransitionError(ConflictError):
    """A deletion request was moved along an edge its state machine does not have."""


# --- integrity -----------------------------------------------------------------------------------


class IntegrityError(StorageError):
    """A hash chain (audit log or privacy ledger) does not verify."""
