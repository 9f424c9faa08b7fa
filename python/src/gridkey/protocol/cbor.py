"""Deterministic CBOR (RFC 8949 §4.2.1) with a strict, bounded decoder.

Encoding is cbor2 with ``canonical=True``. Every map GridKey defines uses small unsigned integer
keys (< 24), for which cbor2's ordering and RFC 8949's bytewise ordering coincide.

Decoding first walks the raw bytes with :func:`check_deterministic`, then hands them to cbor2.
The walk is hand-written because cbor2 has no strict mode: it accepts indefinite lengths,
duplicate map keys and over-long integer heads, turns dozens of semantic tags into arbitrary
Python objects, and trusts declared lengths when allocating. The walk rejects all of that before
cbor2 sees a byte, and bounds depth and item counts by the input size.
"""

from __future__ import annotations

from typing import Any

import cbor2

from .errors import DecodeError

MAX_DEPTH = 8
_ALLOWED_SIMPLE = {20, 21, 22}  # false, true, null; no floats, no undefined


def dumps(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def loads(data: bytes, *, max_size: int, allowed_tags: frozenset[int] = frozenset()) -> Any:
    """Decode ``data`` iff it is one well-formed, deterministically encoded CBOR item."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"message too large ({len(data)} > {max_size} bytes)")
    if not data:
        raise DecodeError("empty message")
    end = check_deterministic(data, allowed_tags)
    if end != len(data):
        raise DecodeError("trailing bytes after CBOR item")
    try:
        return cbor2.loads(data)
    except Exception as exc:  # pragma: no cover - the walk already rejected what cbor2 would
        raise DecodeError(f"CBOR decode failed: {type(exc).__name__}") from None


def check_deterministic(data: bytes, allowed_tags: frozenset[int] = frozenset()) -> int:
    """Validate one CBOR item at the start of ``data``; return the position just after it.

    Iterative (no recursion, no call per item) because it runs on every byte a peer sends.
    Map keys must be integers (every GridKey map uses integer labels, like COSE), in strictly
    increasing bytewise order.
    """
    n = len(data)
    pos = 0
    # One frame per open container: [items left, is_map, items done, previous key bytes].
    stack: list[list] = []
    left, is_map, done, prev_key = 1, False, 0, b""
    while True:
        while left == 0:
            if not stack:
                return pos
            left, is_map, done, prev_key = stack.pop()
        if pos >= n:
            raise DecodeError("truncated CBOR")
        item_start = pos
        ib = data[pos]
        major, arg = ib >> 5, ib & 0x1F
        pos += 1
        if arg >= 24:
            if arg > 27:
                raise DecodeError("indefinite length or reserved additional information")
            width = 1 << (arg - 24)
            if pos + width > n:
                raise DecodeError("truncated CBOR head")
            if major == 7:
                raise DecodeError("floats and unassigned simple values are not allowed")
            arg = int.from_bytes(data[pos : pos + width], "big")
            if arg < (24 if width == 1 else 1 << (4 * width)):
                raise DecodeError("non-minimal integer or length encoding")
            pos += width
        key_item = is_map and done % 2 == 0
        left -= 1
        done += 1
        if major == 2 or major == 3:
            if arg > n - pos:
                raise DecodeError("truncated CBOR string")
            if major == 3:
                try:
                    data[pos : pos + arg].decode("utf-8")
                except UnicodeDecodeError:
                    raise DecodeError("invalid UTF-8 in text string") from None
            pos += arg
        elif major == 4 or major == 5:
            if key_item:
                raise DecodeError("map keys must be integers")
            count = arg * (2 if major == 5 else 1)
            if count > n - pos:
                raise DecodeError("container longer than the message")
            if len(stack) >= MAX_DEPTH:
                raise DecodeError("CBOR nesting too deep")
            stack.append([left, is_map, done, prev_key])
            left, is_map, done, prev_key = count, major == 5, 0, b""
            continue
        elif major == 6:
            if key_item:
                raise DecodeError("map keys must be integers")
            if arg not in allowed_tags:
                raise DecodeError(f"CBOR tag {arg} not allowed here")
            if len(stack) >= MAX_DEPTH:
                raise DecodeError("CBOR nesting too deep")
            stack.append([left, is_map, done, prev_key])
            left, is_map, done, prev_key = 1, False, 0, b""
            continue
        elif major == 7 and arg not in _ALLOWED_SIMPLE:
            raise DecodeError("floats and unassigned simple values are not allowed")
        if key_item:
            if major > 1:
                # Integer keys only: Python's True == 1 made {1: 5, true: 7} decode as {1: 7}.
                raise DecodeError("map keys must be integers")
            key = data[item_start:pos]
            if done > 1 and key <= prev_key:
                raise DecodeError("map keys duplicated or not in deterministic order")
            prev_key = key


def encode_uint(n: int) -> bytes:
    """The shortest head for an unsigned integer (major type 0)."""
    if n < 24:
        return bytes([n])
    if n < 0x100:
        return bytes([0x18, n])
    if n < 0x10000:
        return b"\x19" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x1a" + n.to_bytes(4, "big")
    return b"\x1b" + n.to_bytes(8, "big")


def encode_bstr(value: bytes) -> bytes:
    """A definite byte string: the head by hand, so hot paths can concatenate without cbor2."""
    n = len(value)
    if n < 24:
        head = bytes([0x40 | n])
    elif n < 0x100:
        head = bytes([0x58, n])
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    else:
        head = b"\x5a" + n.to_bytes(4, "big")
    return head + value


def read_flat_map(data: bytes, schema: tuple[tuple[int, type], ...]) -> list[Any]:
    """Values of a map with exactly ``schema``'s keys (small uints, in order) and scalar types.

    Accepts only the deterministic encoding, so unknown, missing, duplicate, reordered and
    mistyped fields and over-long heads are all rejected by construction. Used for the messages
    a member decodes n times per round; everything else goes through :func:`loads`.
    """
    n = len(data)
    if n == 0 or len(schema) >= 24 or data[0] != 0xA0 | len(schema):
        raise DecodeError(f"expected a map of {len(schema)} fields")
    pos = 1
    out: list[Any] = []
    for key, typ in schema:
        if pos >= n or data[pos] != key:
            raise DecodeError(f"expected field {key}")
        pos += 1
        if pos >= n:
            raise DecodeError("truncated CBOR")
        ib = data[pos]
        major, arg = ib >> 5, ib & 0x1F
        pos += 1
        if arg >= 24:
            if arg > 27:
                raise DecodeError("indefinite length or reserved additional information")
            width = 1 << (arg - 24)
            if pos + width > n:
                raise DecodeError("truncated CBOR head")
            arg = int.from_bytes(data[pos : pos + width], "big")
            if arg < (24 if width == 1 else 1 << (4 * width)):
                raise DecodeError("non-minimal integer or length encoding")
            pos += width
        if typ is int:
            if major != 0:
                raise DecodeError(f"field {key} must be an unsigned integer")
            out.append(arg)
            continue
        if major != (2 if typ is bytes else 3) or arg > n - pos:
            raise DecodeError(f"field {key} must be a {'byte' if typ is bytes else 'text'} string")
        value = data[pos : pos + arg]
        pos += arg
        if typ is str:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("invalid UTF-8 in text string") from None
        out.append(value)
    if pos != n:
        raise DecodeError("trailing bytes after CBOR map")
    return out


def bstr_span(data: bytes, pos: int) -> tuple[int, int]:
    """(start, end) of the content of a definite, minimally encoded byte string head at ``pos``."""
    if pos >= len(data) or data[pos] >> 5 != 2:
        raise DecodeError("expected a byte string")
    info = data[pos] & 0x1F
    pos += 1
    if info < 24:
        length = info
    elif info <= 27:
        width = 1 << (info - 24)
        length = int.from_bytes(data[pos : pos + width], "big")
        if pos + width > len(data) or length < (24 if width == 1 else 1 << (4 * width)):
            raise DecodeError("truncated or non-minimal byte string length")
        pos += width
    else:
        raise DecodeError("indefinite-length byte strings are not allowed")
    if length > len(data) - pos:
        raise DecodeError("truncated byte string")
    return pos, pos + length


# --- typed field access for decoded maps -------------------------------------------------------


def is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


def check_fields(obj: Any, required: dict[int, type], optional: dict[int, type] | None = None) -> dict:
    """A map with exactly these integer keys and value types; unknown keys are an error."""
    optional = optional or {}
    if not isinstance(obj, dict):
        raise DecodeError("expected a CBOR map")
    for key in obj:
        if type(key) is not int or (key not in required and key not in optional):
            raise DecodeError(f"unknown field {key!r}")
    for key in required:
        if key not in obj:
            raise DecodeError(f"missing field {key}")
    for key, value in obj.items():
        typ = required.get(key) or optional[key]
        if type(value) is not typ:  # exact: bool is not an int here
            raise DecodeError(f"field {key} has type {type(value).__name__}, expected {typ.__name__}")
        if typ is int and value < 0:
            raise DecodeError(f"field {key} must be unsigned")
    return obj
