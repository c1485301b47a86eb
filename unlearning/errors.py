"""The one exception hierarchy of ``unlearning``."""


class UnlearningError(Exception):
    """Base of every error raised by ``unlearning``."""
