"""The one exception hierarchy of ``unlearning``."""


class UnlearningError(Exception):
    """Base of every error raised by ``unlearning``."""


class UnlearningConfigurationError(UnlearningError, ValueError):
    """A parameter is out of range or inconsistent; the message names the knob to change."""


class UnlearningInputError(UnlearningError, ValueError):
    """A public function got an argument of the wrong type, shape, length or range."""


class RecordBudgetError(UnlearningConfigurationError):
    """An update cannot be recorded within the configured record size and norm bound."""


class HistorySecretError(UnlearningError):
    """A released history secret does not match the commitment the server stored at enrolment."""


class RecordAuthenticationError(UnlearningError):
    """A sealed history record failed AES-GCM authentication: wrong key, or tampered bytes or
    associated data (another run, round, client or format version)."""


class MalformedRecordError(UnlearningError, ValueError):
    """An authenticated record whose plaintext does not parse (size, header, padding, body)."""


class RecordBoundError(UnlearningError):
    """A decoded update violates the norm bound an honest record always satisfies."""


class BrokenChainError(UnlearningError):
    """A differential record's parent is missing or is not the record opened just before it."""
