"""The one exception hierarchy of ``federation``."""


class FederationError(Exception):
    """Base of every error raised by ``federation``."""
