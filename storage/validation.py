"""Input checks shared by the write types and the repository; each raises StorageValueError."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from storage.canonical import normalize_json
from storage.errors import StorageValueError


def check_int(value: Any, name: str, *, minimum: int | None = 0) -> int:
    """``value`` as a Python int (numpy integers accepted; bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise StorageValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise StorageValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value: Any, name: str, *, minimum: float | None = None, below: float | None = None,
                positive: bool = False) -> float:
    """``value`` as a finite Python float in the stated range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise StorageValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise StorageValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise StorageValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise StorageValueError(f"{name} must be >= {minimum}, got {value!r}")
    if below is not None and value >= below:
        raise StorageValueError(f"{name} must be < {below}, got {value!r}")
    return value


def check_ids(values: Iterable[Any], name: str) -> tuple[int, ...]:
    """Distinct non-negative client ids, sorted."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise StorageValueError(f"{name} must be a collection of client ids, got {values!r}")
    ids = [check_int(value, f"{name} entry") for value in values]
    if len(set(ids)) != len(ids):
        raise StorageValueError(f"{name} lists a client id twice")
    return tuple(sorted(ids))


def check_text(value: Any, name: str, *, max_length: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise StorageValueError(f"{name} must be a non-empty string of at most {max_length} characters, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise StorageValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_bytes(value: Any, name: str, *, length: int | None = None) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise StorageValueError(f"{name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if length is not None and len(value) != length:
        raise StorageValueError(f"{name} must be exactly {length} bytes, got {len(value)}")
    return value


def check_json_object(value: Any, name: str) -> Mapping[str, Any]:
    """A read-only copy of a JSON object (str keys, finite numbers) as it will read back."""
    if not isinstance(value, Mapping):
        raise StorageValueError(f"{name} must be a mapping (a JSON object), got {type(value).__name__}")
    try:
        return MappingProxyType(normalize_json(dict(value)))
    except StorageValueError as error:
        raise StorageValueError(f"{name}: {error}") from None


def check_time(value: Any, name: str) -> datetime:
    """A timezone-aware datetime, converted to the naive UTC the database stores."""
    if not isinstance(value, datetime):
        raise StorageValueError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise StorageValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got a naive datetime")
    return value.astimezone(UTC).replace(tzinfo=None)


def utc_now() -> datetime:
    """Now, as the naive UTC datetime the database stores (microsecond precision)."""
    return datetime.now(UTC).replace(tzinfo=None)


def from_db_time(value: datetime | None) -> datetime | None:
    """A stored naive-UTC datetime as an aware UTC datetime."""
    return None if value is None else value.replace(tzinfo=UTC)


def iso_utc(value: datetime) -> str:
    """The canonical text of a stored time inside hashed entries: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
