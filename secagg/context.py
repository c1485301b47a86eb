"""The one canonical encoding of context: HKDF info, AEAD associated data, signed transcripts, hashes.

Every place that binds several values into one byte string goes through ``encode_parts``. The
encoding is a prefix-free code, so it is injective: two different part lists (different values,
types, order or count) never encode to the same bytes. This is what makes a key derived for
(round 1, client 12) different from one for (round 11, client 2), and b"7" different from 7.

Layout (all integers big-endian)::

    count (4 B, unsigned) || part_1 || ... || part_count
    part = tag (1 B) || payload length (4 B, unsigned) || payload
    tag 0x01 bytes: payload = the bytes
    tag 0x02 str:   payload = UTF-8 of the string
    tag 0x03 int:   payload = the integer as signed 8-byte two's complement (length always 8)
"""

from __future__ import annotations

import numbers
import struct

from secagg.errors import ConfigurationError, MalformedMessageError

_TAG_BYTES = 0x01
_TAG_STR = 0x02
_TAG_INT = 0x03
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_MAX_PART_LENGTH = 2**32 - 1
_MAX_PART_COUNT = 2**32 - 1
_HEADER = struct.Struct(">BI")
_COUNT = struct.Struct(">I")
_INT = struct.Struct(">q")

__all__ = ["decode_parts", "encode_parts"]


def _encode_one(part: object, position: int) -> bytes:
    # bool is an int subclass; True == 1 would make the type of a flag ambiguous, so refuse it.
    if isinstance(part, bool):
        raise ConfigurationError(f"part {position}: bool is not encodable; pass 0/1 as an int")
    if isinstance(part, (bytes, bytearray, memoryview)):
        tag, payload = _TAG_BYTES, bytes(part)
    elif isinstance(part, str):
        tag = _TAG_STR
        try:
            payload = part.encode("utf-8")
        except UnicodeEncodeError as error:  # lone surrogates have no UTF-8 form
            raise ConfigurationError(f"part {position}: string is not valid Unicode ({error})") from None
    elif isinstance(part, numbers.Integral):
        value = int(part)
        if not _INT_MIN <= value <= _INT_MAX:
            raise ConfigurationError(f"part {position}: integer {value} does not fit in a signed 64-bit field")
        tag, payload = _TAG_INT, _INT.pack(value)
    else:
        raise ConfigurationError(
            f"part {position}: expected bytes, str or int, got {type(part).__name__}"
        )
    if len(payload) > _MAX_PART_LENGTH:
        raise ConfigurationError(f"part {position}: {len(payload)} bytes exceeds the 2**32 - 1 limit")
    return _HEADER.pack(tag, len(payload)) + payload


def encode_parts(*parts: bytes | str | int) -> bytes:
    """Encode ``parts`` canonically and injectively (see the module docstring for the layout).

    Args:
        parts: any number of bytes-like objects, strings or integers in [-2**63, 2**63).

    Returns:
        The encoding; ``4 + sum(5 + len(payload_i))`` bytes.

    Raises:
        ConfigurationError: a part has another type (including bool), an integer is out of the
            signed 64-bit range, or a string cannot be encoded as UTF-8.
    """
    if len(parts) > _MAX_PART_COUNT:
        raise ConfigurationError(f"{len(parts)} parts exceed the 2**32 - 1 limit")
    return _COUNT.pack(len(parts)) + b"".join(
        _encode_one(part, position) for position, part in enumerate(parts)
    )


def decode_parts(data: bytes) -> tuple[bytes | str | int, ...]:
    """Invert ``encode_parts``: ``decode_parts(encode_parts(*p)) == p`` for every valid ``p``.

    Raises:
        MalformedMessageError: ``data`` is not exactly one valid encoding (bad tag, truncated
            part, wrong integer length, invalid UTF-8, or trailing bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < _COUNT.size:
        raise MalformedMessageError("encoding shorter than its 4-byte part count")
    (count,) = _COUNT.unpack_from(view, 0)
    offset = _COUNT.size
    parts: list[bytes | str | int] = []
    for position in range(count):
        if len(view) - offset < _HEADER.size:
            raise MalformedMessageError(f"part {position}: truncated header")
        tag, length = _HEADER.unpack_from(view, offset)
        offset += _HEADER.size
        if len(view) - offset < length:
            raise MalformedMessageError(f"part {position}: payload of {length} bytes is truncated")
        payload = bytes(view[offset : offset + length])
        offset += length
        if tag == _TAG_BYTES:
            parts.append(payload)
        elif tag == _TAG_STR:
            try:
                parts.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise MalformedMessageError(f"part {position}: string payload is not UTF-8") from None
        elif tag == _TAG_INT:
            if length != _INT.size:
                raise MalformedMessageError(f"part {position}: integer payload has {length} bytes, not 8")
            parts.append(_INT.unpack(payload)[0])
        else:
            raise MalformedMessageError(f"part {position}: unknown tag 0x{tag:02x}")
    if offset != len(view):
        raise MalformedMessageError(f"{len(view) - offset} trailing bytes after {count} parts")
    return tuple(parts)
