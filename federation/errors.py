"""The one exception hierarchy of ``federation``."""


class FederationError(Exception):
    """Base of every error raised by ``federation``."""


class ConfigError(FederationError, ValueError):
    """A run configuration value is out of range or unknown; the message names the key."""


class TransportError(FederationError):
    """A worker process or network peer failed to deliver a protocol message."""


class ResumeError(FederationError):
    """A run cannot be resumed (unknown run id, finished run, or a configuration that differs)."""
