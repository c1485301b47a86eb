"""The one exception hierarchy of ``privacy``."""


class PrivacyError(Exception):
    """Base of every error raised by ``privacy``."""


class CalibrationError(PrivacyError, ValueError):
    """No noise level meets the requested (epsilon, delta), or a parameter is out of range."""


class BudgetExceededError(PrivacyError):
    """A release would take a client's epsilon past its budget; nothing was charged."""


class LedgerError(PrivacyError):
    """The ledger's append-only invariants were violated (bad event, reordered or edited entry)."""
