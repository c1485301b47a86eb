"""Random bit sources for the exact noise samplers.

Noise that protects a client's update is secret material: it comes from the operating system's
CSPRNG (``os.urandom``), never from numpy's or Python's default generators (docs/ARCHITECTURE.md,
"Trust and privacy model"). The samplers consume a stream of 64-bit words and nothing else, so
their output is a deterministic function of the stream; that is what lets the statistical tests
replay a fixed stream through :class:`DeterministicTestSource`.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privacy.errors import RandomnessError

# One os.urandom call is capped well below the kernel's getrandom limit (32 MiB per call on
# Linux); bigger requests are served in chunks.
_URANDOM_CHUNK_BYTES = 1 << 24
MAX_WORDS_PER_REQUEST = 1 << 28


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise RandomnessError(f"word count must be an int, got {type(count).__name__}")
    count = int(count)
    if count < 0 or count > MAX_WORDS_PER_REQUEST:
        raise RandomnessError(f"word count must be in [0, {MAX_WORDS_PER_REQUEST}], got {count}")
    return count


@runtime_checkable
class RandomWordSource(Protocol):
    """Anything that yields uniformly random 64-bit words, as ``(count,) uint64``."""

    def words(self, count: int) -> np.ndarray:  # pragma: no cover - protocol
        ...


class SystemRandomSource:
    """Words straight from the OS CSPRNG (``os.urandom``). The only source for real releases."""

    is_cryptographic = True

    def words(self, count: int) -> np.ndarray:
        """Return ``(count,) uint64`` words read from ``os.urandom``."""
        count = _check_count(count)
        total = 8 * count
        if total <= _URANDOM_CHUNK_BYTES:
            raw = os.urandom(total)
        else:
            raw = b"".join(
                os.urandom(min(_URANDOM_CHUNK_BYTES, total - start))
                for start in range(0, total, _URANDOM_CHUNK_BYTES)
            )
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64, copy=False)

    def __repr__(self) -> str:
        return "SystemRandomSource()"


class DeterministicTestSource:
    """A reproducible stream (AES-256-CTR keyed by SHA-256 of a label and the seed).

    For statistical tests and reproducible simulations only: anyone who knows the seed knows the
    noise, so a release made with it carries no privacy. The mechanisms record which kind of source
    produced a release (see ``privacy.mechanisms``).
    """

    is_cryptographic = False

    def __init__(self, seed: bytes | int) -> None:
        if isinstance(seed, bool):
            raise RandomnessError("seed must be bytes or a non-negative int, not bool")
        if isinstance(seed, (int, np.integer)):
            if int(seed) < 0:
                raise RandomnessError(f"seed must be non-negative, got {seed}")
            seed = int(seed).to_bytes(16, "big", signed=False) if int(seed) < (1 << 128) else None
            if seed is None:
                raise RandomnessError("integer seeds must be below 2**128")
        if not isinstance(seed, (bytes, bytearray)):
            raise RandomnessError(f"seed must be bytes or int, got {type(seed).__name__}")
        key = hashlib.sha256(b"fedvault/privacy/deterministic-test-source\x00" + bytes(seed)).digest()
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._seed_repr = bytes(seed).hex()[:16]

    def words(self, count: int) -> np.ndarray:
        """Return the next ``(count,) uint64`` words of the keystream."""
        count = _check_count(count)
        raw = self._encryptor.update(bytes(8 * count))
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64, copy=False)

    def __repr__(self) -> str:
        return f"DeterministicTestSource(seed={self._seed_repr}...)"


def resolve_source(source: RandomWordSource | None) -> RandomWordSource:
    """The caller's source, or a fresh :class:`SystemRandomSource` when none is given."""
    if source is None:
        return SystemRandomSource()
    if not isinstance(source, RandomWordSource):
        raise RandomnessError(
            f"source must provide words(count) -> uint64 array, got {type(source).__name__}"
        )
    return source


def is_cryptographic(source: RandomWordSource) -> bool:
    """Whether ``source`` is the OS CSPRNG (a release made with anything else is not private)."""
    return bool(getattr(source, "is_cryptographic", False))
