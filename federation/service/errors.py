"""Errors of the networked service, each with the HTTP status the API answers it with.

Every error the service raises for a request derives from ``ServiceError`` (a
``federation.errors.FederationError``, so the CLI prints it as one line); ``status_code`` is
what the API returns, always a 4xx for a request the client got wrong, and the message is the
response's ``detail``, written to tell the caller what to fix.
"""

from __future__ import annotations

from federation.errors import FederationError


class ServiceError(FederationError):
    """Base of every service error; ``status_code`` is the HTTP status it maps to."""

    status_code = 400


class BadRequestError(ServiceError):
    """The request is malformed or its values are out of range (400)."""

    status_code = 400


class AuthenticationFailedError(ServiceError):
    """Missing, malformed or invalid request signature, unknown client, or bad operator token (401)."""

    status_code = 401


class StaleRequestError(AuthenticationFailedError):
    """The request's timestamp is outside the accepted clock window (401)."""


class ReplayedRequestError(AuthenticationFailedError):
    """The request's nonce was already used within the replay window (401)."""


class ForbiddenError(ServiceError):
    """The authenticated caller may not do this: another client's resource, or a wrong enrolment
    token (403)."""

    status_code = 403


class NotFoundError(ServiceError):
    """No such round, client or deletion request (404)."""

    status_code = 404


class ConflictError(ServiceError):
    """The request does not fit the current state: a closed stage, a different enrolled key, a
    second answer to a stage (409)."""

    status_code = 409


class PayloadTooLargeError(ServiceError):
    """The request body exceeds the endpoint's limit (413)."""

    status_code = 413


class TooManyRequestsError(ServiceError):
    """The replay store is full; retry after the window (429)."""

    status_code = 429


class UnavailableError(ServiceError):
    """The server cannot make a request durable right now (disk or database failure); retry (503).
    Never the answer to bad input."""

    status_code = 503


class StateDirectoryError(ServiceError):
    """The server's state directory is unusable (permissions, malformed files)."""

    status_code = 400


class ServiceRequestError(ServiceError):
    """Raised by the HTTP client: the server refused a request (``status_code`` is its answer,
    the message its ``detail``) or could not be reached after every retry."""

    def __init__(self, message: str, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code
