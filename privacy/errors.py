"""The one exception hierarchy of ``privacy``."""


class PrivacyError(Exception):
    """Base of every error raised by ``privacy``."""


class CalibrationError(PrivacyError, ValueError):
    """No noise level meets the requested (epsilon, delta), or a parameter is out of range."""


class BudgetExceededError(PrivacyError):
    """A release would take a client's epsilon past its budget; nothing was charged."""


class LedgerError(PrivacyError):
    """The ledger's append-only invariants were violated (bad event, reordered or edited entry)."""


class RandomnessError(PrivacyError, ValueError):
    """A random source was misused (bad word count, seed or source object)."""


class SamplerParameterError(PrivacyError, ValueError):
    """A noise sampler was asked for a scale or size it cannot sample exactly."""


class AccountingError(PrivacyError, ValueError):
    """An event or RDP vector cannot be accounted (unknown event, bad order vector, bad delta)."""


class UnsupportedEventError(AccountingError):
    """The named accountant cannot interpret this event (e.g. PRV on a Skellam release)."""


class EventFormatError(AccountingError):
    """Event JSON is malformed: unknown type, missing or extra field, value out of range."""


class MechanismError(PrivacyError, ValueError):
    """A noise release was requested with inputs that do not match its mechanism."""


class InsufficientSurvivorsError(MechanismError):
    """Fewer clients survived than the distributed-noise floor assumes; the round must abort."""


class AuditError(PrivacyError, ValueError):
    """An empirical audit was given inconsistent counts, scores or parameters."""
