"""The one exception hierarchy of ``storage``."""


class StorageError(Exception):
    """Base of every error raised by ``storage``."""
