"""Errors of the learning side of ``federation``: datasets, splits, models, trainers, compressors.

All derive from :class:`federation.errors.FederationError`, so a caller (the CLI) that catches the
package root catches these too. The ``ValueError`` mix-in marks the ones caused by a bad argument.
"""

from federation.errors import FederationError


class DatasetError(FederationError, ValueError):
    """Unknown dataset, a bundled data file that is missing or malformed, or bad loader arguments."""


class PartitionError(DatasetError):
    """A client split cannot be made as asked (too few samples, bad alpha, bad client count)."""


class ModelError(FederationError, ValueError):
    """Unknown model name, an input shape a model cannot take, or a parameter vector of wrong size."""


class TrainingError(FederationError):
    """Local training was misconfigured or failed (non-finite loss, empty client data)."""


class CompressionError(FederationError, ValueError):
    """A compressor was given bad parameters or an input of the wrong shape or dtype."""


class AlgorithmError(FederationError, ValueError):
    """LoCoDL, DIANA or a local-training baseline was given parameters outside its valid range."""
