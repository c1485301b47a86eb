"""The one exception hierarchy of ``secagg``. Every error it raises derives from SecAggError."""


class SecAggError(Exception):
    """Base of every error raised by ``secagg``."""


class ConfigurationError(SecAggError, ValueError):
    """A parameter is out of range or inconsistent; the message names the knob to change."""


class BitWidthError(ConfigurationError):
    """The modulus 2**b cannot hold the sum without exceeding the allowed overflow probability."""


class LatticeError(SecAggError, ValueError):
    """Bad lattice input: wrong shape, non-finite values, unknown lattice name."""


class CryptoError(SecAggError):
    """A cryptographic check failed."""


class AuthenticationError(CryptoError):
    """An AEAD tag, a signature or a commitment did not verify."""


class InvalidKeyError(CryptoError, ValueError):
    """A key has the wrong length or is a degenerate (low-order) point."""


class ShamirError(SecAggError):
    """Secret sharing failed."""


class NotEnoughSharesError(ShamirError):
    """Fewer shares than the reconstruction threshold."""


class InconsistentSharesError(ShamirError):
    """The shares do not lie on one polynomial of the declared degree, or rebuild an invalid secret."""


class ProtocolError(SecAggError):
    """A SecAgg+ message is out of order, from an unknown id, for another round, or otherwise refused."""


class MalformedMessageError(ProtocolError, ValueError):
    """Bytes that do not parse as a valid wire message (type, length, range, version)."""


class RoundAbortedError(ProtocolError):
    """The round cannot complete safely (too few survivors, failed checks); nothing was revealed."""


class UnsafeRequestError(ProtocolError):
    """An unmask request would reveal both the self-mask seed and the mask key of one client."""


class ConsistencyError(UnsafeRequestError):
    """The consistency round failed: too few valid survivor signatures on the set this client
    signed, a signature on another set or round, a second set to sign, or an unmask request that
    deviates from the signed set. The client reveals nothing."""
