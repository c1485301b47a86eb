"""Errors of the deletion flow (requests, unlearning a run, retraining), in ``unlearning``'s one
hierarchy: each derives from :class:`unlearning.errors.UnlearningError`, so the CLI prints it as
one line. A wrong released secret raises the existing :class:`unlearning.errors.HistorySecretError`.
"""

from unlearning.errors import UnlearningError, UnlearningInputError


class DeletionRequestError(UnlearningError):
    """A deletion request was refused before anything was opened or changed."""


class RequestSignatureError(DeletionRequestError):
    """The request's signature does not verify under the client's ENROLLED identity key (forged,
    signed by another client's key, or altered after signing, including a swapped secret)."""


class StaleRequestError(DeletionRequestError):
    """The request's timestamp is outside the freshness window (replayed, or a skewed clock)."""


class ClientNotActiveError(DeletionRequestError):
    """The client cannot be unlearned: it is not enrolled in the run, or it was already deleted
    by a request made with another method."""


class IncompleteHistoryError(UnlearningError):
    """The stored records do not cover every round the client's update entered (history off,
    records expired or never stored): the correction cannot remove it; retrain instead."""


class RetrainError(UnlearningError):
    """Retraining without the client could not produce a model (every round aborted)."""


class ChainFileError(UnlearningInputError):
    """A client's local record-chain file is unreadable, malformed or readable by others."""
