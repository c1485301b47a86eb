"""Canonical JSON and the SHA-256 hash chain shared by the audit log and the privacy ledger.

One encoding for every hashed entry: keys sorted, no insignificant whitespace, UTF-8, integers as
integers, floats in Python's shortest round-trip form, NaN and infinities refused. Two entries hash
equal exactly when their JSON values are equal, whatever the database did to key order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from storage.errors import StorageValueError

#: The ``prev_hash`` of the first entry of a chain: 32 zero bytes, hex.
GENESIS_HASH = "0" * 64


def _plain(value: Any, path: str) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None), validated."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StorageValueError(f"{path}: JSON cannot hold the non-finite number {value!r}")
        return value
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                # json.dumps would silently turn 1 into "1"; a hashed entry must not change on reload.
                raise StorageValueError(f"{path}: JSON object keys must be str, got {key!r}")
            plain[key] = _plain(item, f"{path}.{key}")
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise StorageValueError(f"{path}: {type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON encoding of ``value`` (str keys only, finite floats only)."""
    return json.dumps(
        _plain(value, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def normalize_json(value: Any) -> Any:
    """``value`` as it will read back from a JSON column (tuples become lists), after validation."""
    return json.loads(canonical_json(value))


def chain_hash(entry: Mapping[str, Any], prev_hash: str) -> str:
    """SHA-256 (hex) over the canonical JSON of ``entry`` with ``prev_hash`` bound in.

    Binding the previous hash makes each hash commit to the whole prefix of the chain, so an edited,
    inserted, deleted or reordered entry changes every hash after it.
    """
    if "prev_hash" in entry:
        raise StorageValueError("a chained entry must not carry its own 'prev_hash' field")
    if not (isinstance(prev_hash, str) and len(prev_hash) == 64):
        raise StorageValueError("prev_hash must be 64 hex characters")
    return hashlib.sha256(canonical_json({**entry, "prev_hash": prev_hash})).hexdigest()
