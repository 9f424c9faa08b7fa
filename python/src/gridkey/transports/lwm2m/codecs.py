"""LwM2M 1.1 data formats: encode and decode resource trees, with no I/O.

A LwM2M client answers Read and accepts Write/Create in whatever Content-Format the server picks, and
Eclipse Leshan picks all of them: its web UI reads in TLV, its API in TEXT, SenML JSON or SenML CBOR.
A value must come out identical whichever format carried it, so every format goes through one node model
(:class:`Resource`, :class:`MultiResource`, :class:`ResourceInstance`, :class:`ObjectInstance`,
:class:`Object`) and one table of value types (:class:`RType`, OMA-TS-LightweightM2M_Core-V1_1
Appendix C "Data Types").

Formats (TS 1.1 §7.4): Plain Text (§7.4.1), Opaque (§7.4.2), CoRE Link Format (§7.4.3, RFC 6690),
SenML CBOR (§7.4.4, RFC 8428 §6), SenML JSON (§7.4.5, RFC 8428), TLV (§7.4.6) and the legacy
LwM2M JSON (§7.4.7). Where the TS leaves a choice open the encoders make the one Leshan makes
(leshan-lwm2m-core ``node.codec.*``, ``tlv.TlvEncoder``, ``senml.*``, ``link.*``), byte for byte where
Leshan's own unit tests pin bytes, so that Leshan's decoders, stricter than the TS in places, accept
everything we send. Each such choice is noted where it is made.

Decoders face whatever a server (or anyone on the path) sends. They are strict, bounded by ``max_size``,
never recurse on input structure (TLV and SenML have a fixed, shallow shape, walked level by level) and
raise nothing but :class:`CodecError`.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any, Final, TypeAlias

__all__ = [
    "DEFAULT_MAX_SIZE",
    "LINK",
    "LWM2M_JSON",
    "MAX_ID",
    "MAX_INSTANCE_ID",
    "NULL_OBJLNK",
    "OPAQUE",
    "SENML_CBOR",
    "SENML_JSON",
    "TEXT",
    "TLV",
    "AttrValue",
    "CodecError",
    "ContentFormat",
    "Link",
    "MultiResource",
    "Node",
    "Object",
    "ObjectInstance",
    "Path",
    "RType",
    "Resource",
    "ResourceInstance",
    "ResourceSpec",
    "Schema",
    "UnknownResourceError",
    "UnsupportedFormatError",
    "Value",
    "decode",
    "encode",
    "format_path",
    "link_format",
    "parse_link_format",
    "parse_path",
    "registration_links",
]


class ContentFormat(IntEnum):
    """CoAP Content-Format numbers of the LwM2M 1.1 data formats (TS 1.1 §7.4, IANA CoAP registry)."""

    TEXT = 0
    LINK = 40
    OPAQUE = 42
    SENML_JSON = 110
    SENML_CBOR = 112
    TLV = 11542
    LWM2M_JSON = 11543


TEXT: Final = ContentFormat.TEXT
LINK: Final = ContentFormat.LINK
OPAQUE: Final = ContentFormat.OPAQUE
SENML_JSON: Final = ContentFormat.SENML_JSON
SENML_CBOR: Final = ContentFormat.SENML_CBOR
TLV: Final = ContentFormat.TLV
LWM2M_JSON: Final = ContentFormat.LWM2M_JSON

#: Default cap on a payload handed to :func:`decode` / :func:`parse_link_format`. TLV itself allows
#: 16 MiB values; a firmware image written through block-wise transfer should pass a larger cap.
DEFAULT_MAX_SIZE: Final = 1 << 20

MAX_ID: Final = 65535  # ids are 16-bit (TLV identifiers, Objlnk halves)
MAX_INSTANCE_ID: Final = 65534  # TS 1.1 §6.1: MAX_ID 65535 is reserved, never an object instance id
NULL_OBJLNK: Final = (MAX_ID, MAX_ID)  # TS 1.1 Appendix C: "MAX_ID:MAX_ID" is the null Object Link

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64_MAX: Final = (1 << 64) - 1


# --- errors ---------------------------------------------------------------------------------------


class CodecError(ValueError):
    """A payload that does not decode, or a node the requested format cannot carry.

    The only exception :func:`decode` raises for bad input. A ``ValueError`` so callers that already
    treat bad input as ``ValueError`` keep working; the client answers it with 4.00 Bad Request.
    """


class UnsupportedFormatError(CodecError):
    """The format cannot represent this node or resource (TEXT for an object instance, OPAQUE for an Integer).

    Split out of :class:`CodecError` because the CoAP answer differs from malformed input: 4.06 Not
    Acceptable for a Read whose Accept option names such a format, 4.15 Unsupported Content-Format for
    such a Write.
    """


class UnknownResourceError(CodecError):
    """The payload or path names a resource the schema does not define (the client answers 4.04 Not Found)."""

    def __init__(self, object_id: int, resource_id: int) -> None:
        super().__init__(f"no resource {resource_id} in object {object_id}")
        self.object_id = object_id
        self.resource_id = resource_id


# --- types and nodes ------------------------------------------------------------------------------


class RType(StrEnum):
    """Resource data types (TS 1.1 Appendix C), valued as the DDF ``<Type>`` element spells them.

    Python values: STRING ``str``; INTEGER ``int`` (signed 64-bit); UNSIGNED_INTEGER ``int``
    (0..2**64-1); FLOAT ``float`` (finite IEEE 754 double); BOOLEAN ``bool``; OPAQUE ``bytes``; TIME
    ``int`` seconds since the Unix epoch (signed 64-bit, as Leshan's TLV and SenML codecs carry it);
    OBJLNK ``(object id, instance id)``; CORELNK ``str`` in CoRE Link Format (validated); NONE is the
    type of executable resources, which have no value and are never encoded.
    """

    STRING = "String"
    INTEGER = "Integer"
    UNSIGNED_INTEGER = "Unsigned Integer"
    FLOAT = "Float"
    BOOLEAN = "Boolean"
    OPAQUE = "Opaque"
    TIME = "Time"
    OBJLNK = "Objlnk"
    CORELNK = "Corelnk"
    NONE = ""


@dataclass(frozen=True)
class ResourceSpec:
    """What a decoder needs to know about a resource: its type and, if known, whether it is multiple.

    ``multiple=None`` accepts either shape. When known it is enforced, and it is the only way to tell an
    empty TLV/SenML payload for a multiple resource (valid: no instances) from a missing single value.
    """

    type: RType
    multiple: bool | None = None


#: Resource types by (object id, resource id): a mapping, or a callable returning ``None`` or raising
#: ``KeyError`` for unknown resources. Entries are :class:`RType`, :class:`ResourceSpec`, a DDF type
#: string, or any object with ``type`` and ``multiple`` attributes (e.g. ``objects.ResourceDef``).
Schema: TypeAlias = Mapping[tuple[int, int], Any] | Callable[[int, int], Any]

Value: TypeAlias = str | int | float | bool | bytes | tuple[int, int]
Path: TypeAlias = tuple[int, ...]


def _rtype(value: object) -> RType:
    try:
        return RType(value)
    except ValueError:
        raise CodecError(f"unknown resource type {value!r}") from None


@dataclass(frozen=True)
class _TypedValue:
    id: int
    type: RType
    value: Value

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _rtype(self.type))


@dataclass(frozen=True)
class Resource(_TypedValue):
    """A single-instance resource ``/o/i/r`` and its value."""


@dataclass(frozen=True)
class ResourceInstance(_TypedValue):
    """One instance ``/o/i/r/ri`` of a multiple resource, addressed on its own."""


@dataclass(frozen=True)
class MultiResource:
    """A multiple-instance resource ``/o/i/r``: values by resource instance id (possibly none)."""

    id: int
    type: RType
    instances: Mapping[int, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _rtype(self.type))
        object.__setattr__(self, "instances", dict(self.instances))


@dataclass(frozen=True)
class ObjectInstance:
    """An object instance ``/o/i`` and its resources, in payload order.

    ``id`` is ``None`` only for a TLV Create payload that leaves the instance id to the client (TS 1.1
    §6.3.5 Create).
    """

    id: int | None
    resources: tuple[Resource | MultiResource, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", tuple(self.resources))

    def resource(self, resource_id: int) -> Resource | MultiResource | None:
        """The resource with this id, or ``None``."""
        for r in self.resources:
            if r.id == resource_id:
                return r
        return None


@dataclass(frozen=True)
class Object:
    """An object ``/o`` and its instances, in payload order."""

    id: int
    instances: tuple[ObjectInstance, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "instances", tuple(self.instances))


Node: TypeAlias = Object | ObjectInstance | Resource | MultiResource | ResourceInstance


# --- paths ----------------------------------------------------------------------------------------

_ID_RE = re.compile(r"0|[1-9][0-9]{0,4}")


def parse_path(path: str | Sequence[int]) -> Path:
    """``"/3/0/1"`` or ``(3, 0, 1)`` to ``(3, 0, 1)``; ``"/"`` to ``()``.

    Ids are plain decimal (no sign, no leading zero), at most 4 levels, each 0..65535 except the object
    instance id (0..65534, TS 1.1 §6.1). Raises :class:`CodecError`: SenML names arrive through here.
    """
    if isinstance(path, str):
        if path == "/":
            return ()
        if not path.startswith("/") or len(path) > 24:  # 24 = len("/65535/65534/65535/65535")
            raise CodecError(f"invalid LwM2M path {path[:40]!r}")
        parts = path[1:].split("/")
        if len(parts) > 4 or not all(_ID_RE.fullmatch(p) for p in parts):
            raise CodecError(f"invalid LwM2M path {path!r}")
        ids = [int(p) for p in parts]
    else:
        ids = list(path)
        if len(ids) > 4 or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise CodecError(f"invalid LwM2M path {path!r}")
    for level, i in enumerate(ids):
        if not 0 <= i <= (MAX_INSTANCE_ID if level == 1 else MAX_ID):
            raise CodecError(f"id {i} out of range in path {path!r}")
    return tuple(int(i) for i in ids)


def format_path(path: Sequence[int]) -> str:
    """``(3, 0, 1)`` to ``"/3/0/1"``; ``()`` to ``"/"``."""
    return "/" + "/".join(str(int(i)) for i in path)


def _check_id(value: object, limit: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise CodecError(f"invalid {what} id {value!r}")
    return int(value)


# --- public entry points --------------------------------------------------------------------------


def _content_format(fmt: int) -> ContentFormat:
    try:
        return ContentFormat(fmt)
    except ValueError:
        raise UnsupportedFormatError(f"unsupported content format {fmt!r}") from None


def encode(node: Node, path: str | Sequence[int], fmt: int) -> bytes:
    """Serialize ``node``, the target of a request on ``path``, in Content-Format ``fmt``.

    Shapes: :class:`Object` at ``/o``; :class:`ObjectInstance` at ``/o/i`` (or at ``/o``, wrapped as for a
    Create); :class:`Resource` / :class:`MultiResource` at ``/o/i/r``; :class:`ResourceInstance` at
    ``/o/i/r/ri``. TEXT and OPAQUE carry one value only (TS 1.1 §7.4.1-2): anything else raises
    :class:`UnsupportedFormatError`, as does OPAQUE for a non-Opaque resource.
    """
    p = parse_path(path)
    cf = _content_format(fmt)
    _check_node_at(node, p)
    if cf is TEXT or cf is OPAQUE:
        if not isinstance(node, Resource | ResourceInstance):
            raise UnsupportedFormatError(
                f"{cf.name} carries a single value, not {type(node).__name__} {format_path(p)}"
            )
        if cf is OPAQUE and node.type is not RType.OPAQUE:
            raise UnsupportedFormatError(
                f"OPAQUE format carries Opaque resources only, {format_path(p)} is {node.type}"
            )
        value = _check_value(node.type, node.value, format_path(p))
        return value if cf is OPAQUE else _text_value(node.type, value).encode()
    if cf is TLV:
        return _tlv_encode(node, p)
    if cf is SENML_JSON:
        return _senml_json_encode(node, p)
    if cf is SENML_CBOR:
        return _senml_cbor_encode(node, p)
    if cf is LWM2M_JSON:
        return _lwm2m_json_encode(node, p)
    raise UnsupportedFormatError(f"{cf.name} is not a resource data format")


def decode(
    data: bytes,
    path: str | Sequence[int],
    fmt: int,
    schema: Schema,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Node:
    """Parse a payload sent to ``path`` in Content-Format ``fmt``; ``schema`` gives each resource's type.

    Returns an :class:`Object`, :class:`ObjectInstance`, :class:`Resource` or :class:`MultiResource`, or
    :class:`ResourceInstance` for paths of 1, 2, 3 and 4 levels. Every record in the payload must lie
    under ``path``. Raises only :class:`CodecError` (or its subclasses) for bad payloads.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("payload must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise CodecError(f"payload too large ({len(data)} > {max_size} bytes)")
    p = parse_path(path)
    if not p:
        raise UnsupportedFormatError("decoding at the root path is not supported")
    cf = _content_format(fmt)
    spec_of = _spec_lookup(schema)
    if cf is TEXT or cf is OPAQUE:
        return _single_decode(data, p, cf, spec_of)
    if cf is TLV:
        return _tlv_decode(data, p, spec_of)
    if cf is SENML_JSON:
        return _assemble(_senml_entries(_senml_json_records(data), binary=False), p, spec_of, legacy=False)
    if cf is SENML_CBOR:
        return _assemble(_senml_entries(_senml_cbor_records(data), binary=True), p, spec_of, legacy=False)
    if cf is LWM2M_JSON:
        return _assemble(_lwm2m_json_entries(data), p, spec_of, legacy=True)
    raise UnsupportedFormatError(f"{cf.name} is not a resource data format")


def _check_node_at(node: object, p: Path) -> None:
    """The node must be what a request on ``p`` targets, with matching ids (as Leshan's encoders check)."""
    where = format_path(p)
    if isinstance(node, Object):
        ok = len(p) == 1 and node.id == p[0]
    elif isinstance(node, ObjectInstance):
        ok = len(p) == 1 or (len(p) == 2 and node.id in (None, p[1]))
    elif isinstance(node, Resource | MultiResource):
        ok = len(p) == 3 and node.id == p[2]
    elif isinstance(node, ResourceInstance):
        ok = len(p) == 4 and node.id == p[3]
    else:
        raise CodecError(f"not a LwM2M node: {type(node).__name__}")
    if not ok:
        raise CodecError(f"{type(node).__name__} {getattr(node, 'id', None)} does not match path {where}")


def _spec_lookup(schema: Schema) -> Callable[[int, int], ResourceSpec]:
    """Normalise ``schema`` to a memoised ``(object id, resource id) -> ResourceSpec``."""
    if isinstance(schema, Mapping):
        table = schema

        def get(oid: int, rid: int) -> Any:
            return table.get((oid, rid))
    elif callable(schema):
        get = schema
    else:
        raise TypeError("schema must be a mapping or a callable")
    cache: dict[tuple[int, int], ResourceSpec] = {}

    def spec_of(oid: int, rid: int) -> ResourceSpec:
        spec = cache.get((oid, rid))
        if spec is None:
            try:
                entry = get(oid, rid)
            except LookupError:
                entry = None
            if entry is None:
                raise UnknownResourceError(oid, rid)
            spec = cache[(oid, rid)] = _as_spec(entry)
        return spec

    return spec_of


def _as_spec(entry: Any) -> ResourceSpec:
    if isinstance(entry, ResourceSpec):
        return entry
    if isinstance(entry, str):
        return ResourceSpec(RType(entry))
    if hasattr(entry, "type"):
        multiple = getattr(entry, "multiple", None)
        return ResourceSpec(RType(entry.type), None if multiple is None else bool(multiple))
    raise TypeError(f"schema entry {entry!r} is not a resource type")


# --- values ---------------------------------------------------------------------------------------


def _check_value(rtype: RType, value: object, where: str) -> Value:
    """Validate a value about to be encoded and normalise it (bytearray to bytes, int to float for FLOAT).

    Ranges are the ones every format can carry, so a value encodes in all formats or in none.
    """
    if rtype is RType.STRING:
        if not isinstance(value, str):
            raise _bad_value(rtype, value, where)
        return _utf8_ok(value, where)
    if rtype in (RType.INTEGER, RType.TIME, RType.UNSIGNED_INTEGER):
        lo, hi = (0, _UINT64_MAX) if rtype is RType.UNSIGNED_INTEGER else (_INT64_MIN, _INT64_MAX)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise _bad_value(rtype, value, where)
        return int(value)
    if rtype is RType.FLOAT:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _bad_value(rtype, value, where)
        try:
            f = float(value)
        except OverflowError:
            raise _bad_value(rtype, value, where) from None
        if not math.isfinite(f) or (isinstance(value, int) and f != value):
            raise _bad_value(rtype, value, where)  # NaN/inf have no SenML JSON or TEXT form; ints must convert exactly
        return f
    if rtype is RType.BOOLEAN:
        if not isinstance(value, bool):
            raise _bad_value(rtype, value, where)
        return value
    if rtype is RType.OPAQUE:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _bad_value(rtype, value, where)
        return bytes(value)
    if rtype is RType.OBJLNK:
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise _bad_value(rtype, value, where)
        return _check_objlnk(value[0], value[1], where)
    if rtype is RType.CORELNK:
        if not isinstance(value, str):
            raise _bad_value(rtype, value, where)
        return _check_corelnk(value, where)
    raise CodecError(f"{where}: executable resources have no value to encode")


def _bad_value(rtype: RType, value: object, where: str) -> CodecError:
    return CodecError(f"{where}: invalid {rtype or 'executable'} value {value!r}"[:200])


def _utf8_ok(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CodecError(f"{where}: string is not valid Unicode (lone surrogate)") from None
    return text


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError(f"{where}: invalid UTF-8") from None


def _check_objlnk(oid: object, iid: object, where: str) -> tuple[int, int]:
    """Both halves 0..65535, and 65535 in both or neither: Leshan's ``ObjectLink`` rejects a half-null link."""
    for half in (oid, iid):
        if not isinstance(half, int) or isinstance(half, bool) or not 0 <= half <= MAX_ID:
            raise CodecError(f"{where}: invalid Objlnk ({oid!r}, {iid!r})")
    if (oid == MAX_ID) != (iid == MAX_ID):
        raise CodecError(f"{where}: Objlnk {oid}:{iid} is neither a link nor the null link 65535:65535")
    return (int(oid), int(iid))


_OBJLNK_RE = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")


def _parse_objlnk(text: str, where: str) -> tuple[int, int]:
    """Objlnk as text, ``"3:0"`` (TS 1.1 Appendix C; Leshan ``ObjectLink.decodeFromString``)."""
    m = _OBJLNK_RE.fullmatch(text)
    if m is None:
        raise CodecError(f"{where}: invalid Objlnk {text[:40]!r}")
    return _check_objlnk(int(m[1]), int(m[2]), where)


def _check_corelnk(text: str, where: str) -> str:
    try:
        parse_link_format(text)
    except CodecError as exc:
        raise CodecError(f"{where}: invalid Corelnk value: {exc}") from None
    return text


def _b64std(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_B64STD_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def _b64std_decode(text: str, where: str) -> bytes:
    """Base64 with padding (RFC 4648 §4), canonical only: Opaque in TEXT and LwM2M JSON, as Leshan requires."""
    if _B64STD_RE.fullmatch(text) is None:
        raise CodecError(f"{where}: invalid base64")
    raw = base64.b64decode(text)
    if _b64std(raw) != text:
        raise CodecError(f"{where}: non-canonical base64")
    return raw


def _b64url_decode(text: str, where: str) -> bytes:
    """base64url without padding (RFC 8428 §5, "vd"); Leshan forbids the padding, so do we."""
    if _B64URL_RE.fullmatch(text) is None or len(text) % 4 == 1:
        raise CodecError(f"{where}: invalid base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(raw) != text:
        raise CodecError(f"{where}: non-canonical base64url")
    return raw


# --- Plain Text and Opaque (TS 1.1 §7.4.1, §7.4.2) -----------------------------------------------


def _text_value(rtype: RType, value: Value) -> str:
    """One value as Plain Text, the way Leshan's ``LwM2mNodeTextEncoder`` writes it.

    Floats use Python's shortest round-trip repr (``22.0``, ``1e+16``), which Java's ``Double.valueOf``
    reads back exactly; Booleans are ``0``/``1``; Time is integer seconds; Opaque is padded base64.
    """
    if rtype is RType.FLOAT:
        return repr(value)
    if rtype is RType.BOOLEAN:
        return "1" if value else "0"
    if rtype is RType.OPAQUE:
        return _b64std(value)
    if rtype is RType.OBJLNK:
        return f"{value[0]}:{value[1]}"
    return str(value)  # String, Corelnk, Integer, Unsigned Integer, Time


_TEXT_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")
_TEXT_UINT_RE = re.compile(r"\+?[0-9]{1,20}")
_TEXT_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,5})?")


def _value_from_text(rtype: RType, raw: bytes, where: str) -> Value:
    """Parse a Plain Text value. ASCII digits only (Python's ``int()`` would take ``"1_0"`` or Arabic digits)."""
    text = _utf8(raw, where)
    if rtype is RType.STRING:
        return text
    if rtype in (RType.INTEGER, RType.TIME, RType.UNSIGNED_INTEGER):
        unsigned = rtype is RType.UNSIGNED_INTEGER
        if (_TEXT_UINT_RE if unsigned else _TEXT_INT_RE).fullmatch(text) is None:
            raise CodecError(f"{where}: invalid {rtype} {text[:40]!r}")
        return _int_in_range(int(text), unsigned, where)
    if rtype is RType.FLOAT:
        if len(text) > 400 or _TEXT_FLOAT_RE.fullmatch(text) is None:
            raise CodecError(f"{where}: invalid Float {text[:40]!r}")
        f = float(text)
        if not math.isfinite(f):
            raise CodecError(f"{where}: Float out of range")
        return f
    if rtype is RType.BOOLEAN:
        if text not in ("0", "1"):
            raise CodecError(f"{where}: invalid Boolean {text[:40]!r}")
        return text == "1"
    if rtype is RType.OPAQUE:
        return _b64std_decode(text, where)
    if rtype is RType.OBJLNK:
        return _parse_objlnk(text, where)
    if rtype is RType.CORELNK:
        return _check_corelnk(text, where)
    raise CodecError(f"{where}: executable resources have no value")


def _int_in_range(v: int, unsigned: bool, where: str) -> int:
    lo, hi = (0, _UINT64_MAX) if unsigned else (_INT64_MIN, _INT64_MAX)
    if not lo <= v <= hi:
        raise CodecError(f"{where}: integer out of range")
    return v


def _single_decode(data: bytes, p: Path, cf: ContentFormat, spec_of: Callable[[int, int], ResourceSpec]) -> Node:
    where = format_path(p)
    if len(p) < 3:
        raise UnsupportedFormatError(f"{cf.name} carries a single value, not {where}")
    spec = spec_of(p[0], p[2])
    if len(p) == 3 and spec.multiple:
        raise UnsupportedFormatError(f"{cf.name} cannot carry the multiple resource {where}")
    if len(p) == 4 and spec.multiple is False:
        raise CodecError(f"{where}: resource {p[2]} is single, it has no instances")
    if cf is OPAQUE:
        if spec.type is not RType.OPAQUE:
            raise UnsupportedFormatError(f"OPAQUE format carries Opaque resources only, {where} is {spec.type}")
        value: Value = data
    else:
        value = _value_from_text(spec.type, data, where)
    return Resource(p[2], spec.type, value) if len(p) == 3 else ResourceInstance(p[3], spec.type, value)


# --- TLV (TS 1.1 §7.4.6) --------------------------------------------------------------------------

# Bits 7-6 of the TLV type byte.
_TLV_OBJECT_INSTANCE: Final = 0b00
_TLV_RESOURCE_INSTANCE: Final = 0b01
_TLV_MULTIPLE_RESOURCE: Final = 0b10
_TLV_RESOURCE_VALUE: Final = 0b11


def _tlv(kind: int, ident: int, value: bytes) -> bytes:
    """One TLV with the shortest identifier and length fields, as Leshan's ``TlvEncoder`` writes them."""
    n = len(value)
    if n > 0xFFFFFF:
        raise CodecError("TLV value longer than 16 MiB")
    head = bytearray([kind << 6])
    if ident > 0xFF:
        head[0] |= 0b0010_0000
        head += ident.to_bytes(2, "big")
    else:
        head.append(ident)
    if n < 8:
        head[0] |= n
    elif n <= 0xFF:
        head[0] |= 0b0000_1000
        head.append(n)
    elif n <= 0xFFFF:
        head[0] |= 0b0001_0000
        head += n.to_bytes(2, "big")
    else:
        head[0] |= 0b0001_1000
        head += n.to_bytes(3, "big")
    return bytes(head) + value


def _tlv_int(v: int) -> bytes:
    """Signed two's complement in the smallest of 1/2/4/8 bytes (TS 1.1 Appendix C; Leshan ``encodeInteger``)."""
    for n in (1, 2, 4):
        if -(1 << (8 * n - 1)) <= v < 1 << (8 * n - 1):
            return v.to_bytes(n, "big", signed=True)
    return v.to_bytes(8, "big", signed=True)


def _tlv_value(rtype: RType, v: Value) -> bytes:
    if rtype is RType.STRING or rtype is RType.CORELNK:
        return v.encode()
    if rtype is RType.INTEGER or rtype is RType.TIME:
        return _tlv_int(v)
    if rtype is RType.UNSIGNED_INTEGER:
        # Below 2**63 the signed form has its top bit clear, so it reads the same as unsigned (the TS) and as
        # signed (Leshan's decoder, which reads any TLV integer signed). Above, only 8 bytes are unambiguous.
        return _tlv_int(v) if v < 1 << 63 else v.to_bytes(8, "big")
    if rtype is RType.FLOAT:
        return struct.pack(">d", v)  # always 8 bytes, as Leshan's encoder writes a Java double
    if rtype is RType.BOOLEAN:
        return b"\x01" if v else b"\x00"
    if rtype is RType.OPAQUE:
        return v
    return struct.pack(">HH", *v)  # OBJLNK


def _tlv_resource(res: Resource | MultiResource, where: str) -> bytes:
    rid = _check_id(res.id, MAX_ID, "resource")
    if isinstance(res, Resource):
        value = _check_value(res.type, res.value, f"{where}/{rid}")
        return _tlv(_TLV_RESOURCE_VALUE, rid, _tlv_value(res.type, value))
    if not isinstance(res, MultiResource):
        raise CodecError(f"{where}: {type(res).__name__} is not a resource")
    body = bytearray()
    for ri, v in res.instances.items():
        ri = _check_id(ri, MAX_ID, "resource instance")
        body += _tlv(_TLV_RESOURCE_INSTANCE, ri, _tlv_value(res.type, _check_value(res.type, v, f"{where}/{rid}/{ri}")))
    return _tlv(_TLV_MULTIPLE_RESOURCE, rid, bytes(body))


def _tlv_instance_body(inst: ObjectInstance, where: str) -> bytes:
    return b"".join(_tlv_resource(r, where) for r in inst.resources)


def _tlv_encode(node: Node, p: Path) -> bytes:
    """Leshan's TLV layout: an instance read at ``/o/i`` is a bare array of resource TLVs; at ``/o`` it is wrapped
    in an object-instance TLV (bare if its id is not yet known, for Create); an object is its instance TLVs."""
    where = format_path(p)
    if isinstance(node, Object):
        out = bytearray()
        for inst in node.instances:
            iid = _check_id(inst.id, MAX_INSTANCE_ID, "object instance")
            out += _tlv(_TLV_OBJECT_INSTANCE, iid, _tlv_instance_body(inst, f"{where}/{iid}"))
        return bytes(out)
    if isinstance(node, ObjectInstance):
        if len(p) == 2 or node.id is None:
            return _tlv_instance_body(node, where if len(p) == 2 else f"{where}/?")
        iid = _check_id(node.id, MAX_INSTANCE_ID, "object instance")
        return _tlv(_TLV_OBJECT_INSTANCE, iid, _tlv_instance_body(node, f"{where}/{iid}"))
    if isinstance(node, ResourceInstance):
        value = _check_value(node.type, node.value, where)
        return _tlv(_TLV_RESOURCE_INSTANCE, p[3], _tlv_value(node.type, value))
    return _tlv_resource(node, format_path(p[:2]))


@dataclass(frozen=True, slots=True)
class _Tlv:
    kind: int
    ident: int
    value: bytes


def _tlv_split(data: bytes) -> list[_Tlv]:
    """Split one level of TLVs; container values stay raw until the caller descends (no recursion)."""
    out: list[_Tlv] = []
    pos, n = 0, len(data)
    while pos < n:
        t = data[pos]
        pos += 1
        id_len = 2 if t & 0b0010_0000 else 1
        len_len = (t >> 3) & 0b11
        if pos + id_len + len_len > n:
            raise CodecError("truncated TLV header")
        ident = int.from_bytes(data[pos : pos + id_len], "big")
        pos += id_len
        if len_len:
            length = int.from_bytes(data[pos : pos + len_len], "big")
            pos += len_len
        else:
            length = t & 0b111
        if pos + length > n:
            raise CodecError("TLV value runs past the end of the payload")
        out.append(_Tlv(t >> 6, ident, data[pos : pos + length]))
        pos += length
    return out


def _value_from_tlv(rtype: RType, raw: bytes, where: str) -> Value:
    """Decode a TLV value (TS 1.1 Appendix C), stricter than Leshan: integers only in 1/2/4/8 bytes, Booleans
    only 0/1, Objlnk exactly 4 bytes, strings valid UTF-8."""
    n = len(raw)
    if rtype is RType.STRING:
        return _utf8(raw, where)
    if rtype in (RType.INTEGER, RType.TIME, RType.UNSIGNED_INTEGER):
        if n not in (1, 2, 4, 8):
            raise CodecError(f"{where}: {rtype} TLV value of {n} bytes (1, 2, 4 or 8 expected)")
        # Unsigned Integer is read unsigned, as TS 1.1 Appendix C defines it. Leshan reads it signed and wraps
        # mod 2**64, so it would send 2**64-1 as 0xFF; it never sends a top-bit-set short form below 2**63.
        return int.from_bytes(raw, "big", signed=rtype is not RType.UNSIGNED_INTEGER)
    if rtype is RType.FLOAT:
        if n not in (4, 8):
            raise CodecError(f"{where}: Float TLV value of {n} bytes (4 or 8 expected)")
        f: float = struct.unpack(">f" if n == 4 else ">d", raw)[0]
        if not math.isfinite(f):
            raise CodecError(f"{where}: non-finite Float")
        return f
    if rtype is RType.BOOLEAN:
        if raw not in (b"\x00", b"\x01"):
            raise CodecError(f"{where}: invalid Boolean TLV value")
        return raw == b"\x01"
    if rtype is RType.OPAQUE:
        return raw
    if rtype is RType.OBJLNK:
        if n != 4:
            raise CodecError(f"{where}: Objlnk TLV value of {n} bytes (4 expected)")
        oid, iid = struct.unpack(">HH", raw)
        return _check_objlnk(oid, iid, where)
    if rtype is RType.CORELNK:
        return _check_corelnk(_utf8(raw, where), where)
    raise CodecError(f"{where}: executable resources have no value")


def _tlv_resource_decode(
    tlv: _Tlv, oid: int, where: str, spec_of: Callable[[int, int], ResourceSpec]
) -> Resource | MultiResource:
    spec = spec_of(oid, tlv.ident)
    where = f"{where}/{tlv.ident}"
    if tlv.kind == _TLV_RESOURCE_VALUE:
        if spec.multiple:
            raise CodecError(f"{where}: multiple resource sent as a single value")
        return Resource(tlv.ident, spec.type, _value_from_tlv(spec.type, tlv.value, where))
    if tlv.kind == _TLV_MULTIPLE_RESOURCE:
        return _tlv_multi_decode(tlv.ident, _tlv_split(tlv.value), spec, where)
    raise CodecError(f"{where}: expected a resource TLV, got type {tlv.kind:02b}")


def _tlv_multi_decode(rid: int, children: list[_Tlv], spec: ResourceSpec, where: str) -> MultiResource:
    if spec.multiple is False:
        raise CodecError(f"{where}: single resource sent as multiple")
    values: dict[int, Value] = {}
    for c in children:
        if c.kind != _TLV_RESOURCE_INSTANCE:
            raise CodecError(f"{where}: expected resource instance TLVs, got type {c.kind:02b}")
        if c.ident in values:
            raise CodecError(f"{where}: duplicate resource instance {c.ident}")
        values[c.ident] = _value_from_tlv(spec.type, c.value, f"{where}/{c.ident}")
    return MultiResource(rid, spec.type, values)


def _tlv_resources_decode(
    tlvs: list[_Tlv], oid: int, where: str, spec_of: Callable[[int, int], ResourceSpec]
) -> tuple[Resource | MultiResource, ...]:
    seen: set[int] = set()
    out = []
    for t in tlvs:
        if t.ident in seen:
            raise CodecError(f"{where}: duplicate resource {t.ident}")
        seen.add(t.ident)
        out.append(_tlv_resource_decode(t, oid, where, spec_of))
    return tuple(out)


def _tlv_unwrap(tlvs: list[_Tlv], iid: int, where: str) -> list[_Tlv]:
    """Tolerate one object-instance TLV around an instance or resource payload if its id agrees (as Leshan)."""
    if len(tlvs) == 1 and tlvs[0].kind == _TLV_OBJECT_INSTANCE:
        if tlvs[0].ident != iid:
            raise CodecError(f"{where}: object instance TLV {tlvs[0].ident} does not match the path")
        return _tlv_split(tlvs[0].value)
    return tlvs


def _tlv_decode(data: bytes, p: Path, spec_of: Callable[[int, int], ResourceSpec]) -> Node:
    where = format_path(p)
    tlvs = _tlv_split(data)
    oid = p[0]
    if len(p) == 1:
        if tlvs and tlvs[0].kind in (_TLV_RESOURCE_VALUE, _TLV_MULTIPLE_RESOURCE):
            # Create without an instance id: bare resources, the client picks the id.
            return Object(oid, (ObjectInstance(None, _tlv_resources_decode(tlvs, oid, where, spec_of)),))
        instances: dict[int, ObjectInstance] = {}
        for t in tlvs:
            if t.kind != _TLV_OBJECT_INSTANCE:
                raise CodecError(f"{where}: expected object instance TLVs, got type {t.kind:02b}")
            if t.ident > MAX_INSTANCE_ID or t.ident in instances:
                raise CodecError(f"{where}: invalid or duplicate object instance {t.ident}")
            resources = _tlv_resources_decode(_tlv_split(t.value), oid, f"{where}/{t.ident}", spec_of)
            instances[t.ident] = ObjectInstance(t.ident, resources)
        return Object(oid, tuple(instances.values()))
    tlvs = _tlv_unwrap(tlvs, p[1], where)
    if len(p) == 2:
        return ObjectInstance(p[1], _tlv_resources_decode(tlvs, oid, where, spec_of))
    spec = spec_of(oid, p[2])
    if len(p) == 3:
        if len(tlvs) == 1 and tlvs[0].kind in (_TLV_RESOURCE_VALUE, _TLV_MULTIPLE_RESOURCE):
            if tlvs[0].ident != p[2]:
                raise CodecError(f"{where}: resource TLV {tlvs[0].ident} does not match the path")
            return _tlv_resource_decode(tlvs[0], oid, format_path(p[:2]), spec_of)
        if not tlvs and spec.multiple is False:
            raise CodecError(f"{where}: empty payload for a single resource")
        return _tlv_multi_decode(p[2], tlvs, spec, where)  # bare resource instance TLVs (or none)
    if spec.multiple is False:
        raise CodecError(f"{where}: resource {p[2]} is single, it has no instances")
    if len(tlvs) != 1 or tlvs[0].kind != _TLV_RESOURCE_INSTANCE or tlvs[0].ident != p[3]:
        raise CodecError(f"{where}: expected exactly one resource instance TLV {p[3]}")
    return ResourceInstance(p[3], spec.type, _value_from_tlv(spec.type, tlvs[0].value, where))


# --- records: the shared core of SenML JSON, SenML CBOR and LwM2M JSON ----------------------------

_Record: TypeAlias = tuple[str, RType, Value]  # name relative to the base name, type, checked value
_Entry: TypeAlias = tuple[Path, str, Any]  # resolved path, SenML value label (v/vs/vb/vd/vlo), raw value


def _resource_records(res: Resource | MultiResource, name: str, where: str) -> list[_Record]:
    if isinstance(res, Resource):
        return [(name, res.type, _check_value(res.type, res.value, where))]
    if not isinstance(res, MultiResource):
        raise CodecError(f"{where}: {type(res).__name__} is not a resource")
    out = []
    for ri, v in res.instances.items():
        ri = _check_id(ri, MAX_ID, "resource instance")
        out.append((f"{name}/{ri}" if name else str(ri), res.type, _check_value(res.type, v, f"{where}/{ri}")))
    return out


def _records(node: Node, p: Path) -> list[_Record]:
    """Flatten a node to records named relative to the request path, the way Leshan's SenML and JSON
    encoders name them: ``"0"``, ``"6/0"`` under ``/3/0/``; ``"0/1"`` under ``/3/``; ``""`` for one value."""
    where = format_path(p)
    if isinstance(node, Resource | MultiResource):
        return _resource_records(node, "", where)
    if isinstance(node, ResourceInstance):
        return [("", node.type, _check_value(node.type, node.value, where))]
    instances = node.instances if isinstance(node, Object) else (node,)
    out: list[_Record] = []
    for inst in instances:
        if len(p) == 2:
            prefix = ""
        elif inst.id is None:
            raise CodecError(f"{where}: SenML and JSON need the object instance id")
        else:
            prefix = f"{_check_id(inst.id, MAX_INSTANCE_ID, 'object instance')}/"
        for res in inst.resources:
            rid = _check_id(res.id, MAX_ID, "resource")
            out += _resource_records(res, f"{prefix}{rid}", f"{where}/{prefix}{rid}")
    return out


def _senml_value(rtype: RType, v: Value, binary: bool) -> tuple[str, Any]:
    """SenML value field for a type (TS 1.1 §7.4.4-5; RFC 8428 §4.2). Objlnk goes in ``vlo`` as the TS says;
    Leshan's encoder puts it in ``vs`` but its decoder reads both, and so does ours."""
    if rtype is RType.STRING or rtype is RType.CORELNK:
        return "vs", v
    if rtype is RType.BOOLEAN:
        return "vb", v
    if rtype is RType.OPAQUE:
        return "vd", v if binary else _b64url(v)
    if rtype is RType.OBJLNK:
        return "vlo", f"{v[0]}:{v[1]}"
    return "v", v  # int for Integer/Unsigned/Time, float for Float: the int/float distinction survives


def _senml_pack(node: Node, p: Path, binary: bool) -> list[dict[str, Any]]:
    """Records as Leshan writes them: ``bn`` on the first record only (the request path, with a trailing
    ``/`` when records have names), then ``n`` if not empty, then the value."""
    records = _records(node, p)
    bn = format_path(p) + ("/" if records and records[0][0] else "")
    pack = []
    for i, (name, rtype, v) in enumerate(records):
        rec: dict[str, Any] = {"bn": bn} if i == 0 else {}
        if name:
            rec["n"] = name
        key, raw = _senml_value(rtype, v, binary)
        rec[key] = raw
        pack.append(rec)
    return pack


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _senml_json_encode(node: Node, p: Path) -> bytes:
    return _json_dumps(_senml_pack(node, p, binary=False))


_CBOR_LABELS: Final[dict[str, int | str]] = {"bn": -2, "n": 0, "v": 2, "vs": 3, "vb": 4, "vd": 8, "vlo": "vlo"}


def _senml_cbor_encode(node: Node, p: Path) -> bytes:
    """SenML CBOR (RFC 8428 §6): integer labels, ``vlo`` as a text label (TS 1.1 §7.4.4), maps in insertion
    order (Leshan's unit tests pin that order), floats in their shortest exact width (RFC 8949 §4.1)."""
    pack = [{_CBOR_LABELS[k]: v for k, v in rec.items()} for rec in _senml_pack(node, p, binary=True)]
    return _cbor_encode(pack)


def _lwm2m_json_encode(node: Node, p: Path) -> bytes:
    """Legacy LwM2M JSON (TS 1.1 §7.4.7): ``{"bn":..., "e":[{"n":..., "v"|"bv"|"sv"|"ov":...}]}``.

    Base name as Leshan's ``LwM2mNodeJsonEncoder``: with a trailing ``/`` for objects, instances and
    multiple resources. Opaque is padded base64 in ``sv``; Objlnk is ``ov`` (Leshan writes ``sv``, reads both).
    """
    records = _records(node, p)
    bn = format_path(p) + ("/" if isinstance(node, Object | ObjectInstance | MultiResource) else "")
    entries = []
    for name, rtype, v in records:
        e: dict[str, Any] = {"n": name} if name else {}
        if rtype is RType.OPAQUE:
            e["sv"] = _b64std(v)
        else:
            key, raw = _senml_value(rtype, v, binary=False)
            e[{"v": "v", "vs": "sv", "vb": "bv", "vlo": "ov"}[key]] = raw
        entries.append(e)
    return _json_dumps({"bn": bn, "e": entries})


# SenML labels (RFC 8428 §4.1-4.2, integer labels from §6): CBOR integer label -> JSON name.
_SENML_INT_LABELS: Final[dict[int, str]] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}
_SENML_REGISTERED: Final = frozenset(_SENML_INT_LABELS.values())
_SENML_VALUE_LABELS: Final = ("v", "vs", "vb", "vd", "vlo")
# Fields that would change a value or time-stamp it: a Write carries none (Leshan rejects time-stamps too),
# and ignoring them would store the wrong value.
_SENML_REJECTED: Final = frozenset({"bt", "t", "bv", "bs", "s"})
# Longest base name or name worth reading: "/65535/65534/65535/65535". Checked before concatenating, so a
# pack of many records under one huge base name costs linear time, not quadratic.
_MAX_NAME: Final = 24


def _senml_entries(records: list[dict[str, Any]], binary: bool) -> list[_Entry]:
    """Resolve SenML records to (path, value label, raw value) entries.

    RFC 8428 §4.1, §4.5.1: the name is base name + name, and a base name holds until the next one.
    """
    out: list[_Entry] = []
    bn = ""
    for rec in records:
        for key in rec:
            if key in _SENML_REJECTED:
                raise CodecError(f"SenML field {key!r} is not supported here")
            if key.endswith("_"):
                raise CodecError(f"SenML must-understand field {key!r} is not understood (RFC 8428 §4.4)")
        if "bn" in rec:
            bn = rec["bn"]
            if not isinstance(bn, str) or len(bn) > _MAX_NAME:
                raise CodecError("SenML bn must be a string naming a LwM2M path")
        name = rec.get("n", "")
        if not isinstance(name, str) or len(name) > _MAX_NAME:
            raise CodecError("SenML n must be a string naming a LwM2M path")
        kinds = [k for k in _SENML_VALUE_LABELS if k in rec]
        if len(kinds) != 1:
            raise CodecError(f"SenML record for {bn + name!r} must have exactly one value field")
        kind = kinds[0]
        raw = rec[kind]
        where = (bn + name)[:40]
        if kind == "v":
            if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
                raise CodecError(f"{where}: v must be a number")
        elif kind == "vb":
            if not isinstance(raw, bool):
                raise CodecError(f"{where}: vb must be a boolean")
        elif kind == "vd":
            if binary:
                if not isinstance(raw, bytes):
                    raise CodecError(f"{where}: vd must be a byte string")
            elif not isinstance(raw, str):
                raise CodecError(f"{where}: vd must be a base64url string")
            else:
                raw = _b64url_decode(raw, where)
        elif not isinstance(raw, str):
            raise CodecError(f"{where}: {kind} must be a string")
        out.append((parse_path(bn + name), kind, raw))
    return out


def _assemble(entries: list[_Entry], p: Path, spec_of: Callable[[int, int], ResourceSpec], legacy: bool) -> Node:
    """Build the node a request on ``p`` targets from resolved entries (shared by SenML and LwM2M JSON)."""
    depth = len(p)
    where = format_path(p)
    for path, _, _ in entries:
        if len(path) < 3:
            raise CodecError(f"record {format_path(path)} must name a resource or resource instance")
        if path[:depth] != p:
            raise CodecError(f"record {format_path(path)} lies outside the request path {where}")
    if depth == 4:
        spec = spec_of(p[0], p[2])
        if spec.multiple is False:
            raise CodecError(f"{where}: resource {p[2]} is single, it has no instances")
        if len(entries) != 1:
            raise CodecError(f"{where}: expected exactly one record, got {len(entries)}")
        _, kind, raw = entries[0]
        return ResourceInstance(p[3], spec.type, _value_from_entry(spec.type, kind, raw, legacy, where))
    if depth == 3:
        return _assemble_resource(p[0], p[2], entries, spec_of, legacy, where)
    by_instance: dict[int, list[_Entry]] = {}
    for e in entries:
        by_instance.setdefault(e[0][1], []).append(e)
    if depth == 2:
        return _assemble_instance(p[0], p[1], by_instance.get(p[1], []), spec_of, legacy)
    instances = tuple(_assemble_instance(p[0], iid, es, spec_of, legacy) for iid, es in by_instance.items())
    return Object(p[0], instances)


def _assemble_instance(
    oid: int, iid: int, entries: list[_Entry], spec_of: Callable[[int, int], ResourceSpec], legacy: bool
) -> ObjectInstance:
    by_resource: dict[int, list[_Entry]] = {}
    for e in entries:
        by_resource.setdefault(e[0][2], []).append(e)
    return ObjectInstance(
        iid,
        tuple(
            _assemble_resource(oid, rid, es, spec_of, legacy, f"/{oid}/{iid}/{rid}") for rid, es in by_resource.items()
        ),
    )


def _assemble_resource(
    oid: int,
    rid: int,
    entries: list[_Entry],
    spec_of: Callable[[int, int], ResourceSpec],
    legacy: bool,
    where: str,
) -> Resource | MultiResource:
    spec = spec_of(oid, rid)
    if any(len(path) == 3 for path, _, _ in entries):
        if len(entries) != 1:
            raise CodecError(f"{where}: resource given more than once, or both as a value and as instances")
        if spec.multiple:
            raise CodecError(f"{where}: multiple resource sent as a single value")
        _, kind, raw = entries[0]
        return Resource(rid, spec.type, _value_from_entry(spec.type, kind, raw, legacy, where))
    if spec.multiple is False:
        raise CodecError(f"{where}: single resource sent as multiple, or missing")
    values: dict[int, Value] = {}
    for path, kind, raw in entries:
        if path[3] in values:
            raise CodecError(f"{where}: duplicate resource instance {path[3]}")
        values[path[3]] = _value_from_entry(spec.type, kind, raw, legacy, f"{where}/{path[3]}")
    return MultiResource(rid, spec.type, values)


def _value_from_entry(rtype: RType, kind: str, raw: Any, legacy: bool, where: str) -> Value:
    """Convert one SenML/JSON value to the resource type, only where no information is lost.

    JSON has a single number type (RFC 8259), so ``5.0`` is a valid Integer and ``5`` a valid Float, as in
    Leshan's SenML JSON decoder (``permissiveNumberConversion``). The same rule is applied to CBOR, whose
    numbers RFC 8428 §6 also treats as one type: integers must be integral and in range, floats finite.
    """
    expected = {
        RType.STRING: ("vs",),
        RType.CORELNK: ("vs",),
        RType.INTEGER: ("v",),
        RType.UNSIGNED_INTEGER: ("v",),
        RType.TIME: ("v",),
        RType.FLOAT: ("v",),
        RType.BOOLEAN: ("vb",),
        RType.OPAQUE: ("vs",) if legacy else ("vd",),
        RType.OBJLNK: ("vlo", "vs"),
    }.get(rtype)
    if expected is None:
        raise CodecError(f"{where}: executable resources have no value")
    if kind not in expected:
        raise CodecError(f"{where}: {rtype} value expected in {'/'.join(expected)}, got {kind}")
    if rtype is RType.STRING:
        return _utf8_ok(raw, where)
    if rtype is RType.CORELNK:
        return _check_corelnk(_utf8_ok(raw, where), where)
    if rtype in (RType.INTEGER, RType.TIME, RType.UNSIGNED_INTEGER):
        return _int_in_range(_number_to_int(raw, where), rtype is RType.UNSIGNED_INTEGER, where)
    if rtype is RType.FLOAT:
        return _number_to_float(raw, where)
    if rtype is RType.BOOLEAN:
        return raw
    if rtype is RType.OPAQUE:
        return _b64std_decode(raw, where) if legacy else raw
    return _parse_objlnk(raw, where)


def _number_to_int(raw: int | float | Decimal, where: str) -> int:
    if isinstance(raw, int):
        return raw
    bad = CodecError(f"{where}: {str(raw)[:40]} is not an integer")
    if isinstance(raw, float):
        if not math.isfinite(raw) or not raw.is_integer():
            raise bad
        return int(raw)
    try:
        if not raw.is_finite():
            raise bad
        if raw.is_zero():
            return 0
        if raw.adjusted() > 20 or raw.adjusted() < 0 or raw != raw.to_integral_value():
            raise bad  # |raw| >= 1e21 is out of every range; 0 < |raw| < 1 is not integral
        return int(raw)
    except ArithmeticError:
        raise bad from None


def _number_to_float(raw: int | float | Decimal, where: str) -> float:
    try:
        f = float(raw)
    except (OverflowError, ArithmeticError, ValueError):
        raise CodecError(f"{where}: Float out of range") from None
    if not math.isfinite(f) or (isinstance(raw, int) and f != raw):
        raise CodecError(f"{where}: {str(raw)[:40]} is not a finite Float that converts exactly")
    return f


# --- JSON input -----------------------------------------------------------------------------------


def _json_int(text: str) -> int:
    if len(text) > 24:
        raise CodecError("JSON integer too long")
    return int(text)


def _json_float(text: str) -> Decimal:
    # Decimal keeps the number exact until we know the target type (an Integer may arrive as 1.6E9).
    if len(text) > 400:
        raise CodecError("JSON number too long")
    return Decimal(text)


def _json_constant(text: str) -> Any:
    raise CodecError(f"JSON {text} is not allowed")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise CodecError(f"duplicate JSON key {k[:40]!r}")
        out[k] = v
    return out


def _json_load(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no duplicate keys, numbers kept exact, depth errors caught."""
    text = _utf8(data, "JSON")
    try:
        return json.loads(
            text,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
            object_pairs_hook=_json_object,
        )
    except CodecError:
        raise
    except (ValueError, RecursionError, ArithmeticError) as exc:
        raise CodecError(f"invalid JSON: {str(exc)[:80]}") from None


def _senml_json_records(data: bytes) -> list[dict[str, Any]]:
    if not data:
        return []  # as Leshan: an empty payload is an empty pack
    doc = _json_load(data)
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise CodecError("SenML JSON must be an array of objects")
    return doc


_LWM2M_JSON_VALUES: Final = {"v": "v", "bv": "vb", "sv": "vs", "ov": "vlo"}


def _lwm2m_json_entries(data: bytes) -> list[_Entry]:
    """Legacy LwM2M JSON (TS 1.1 §7.4.7), closed format: unknown keys and time-stamps are rejected."""
    doc = _json_load(data)
    if not isinstance(doc, dict) or not set(doc) <= {"bn", "e"} or not isinstance(doc.get("e"), list):
        raise CodecError("LwM2M JSON must be an object with an 'e' array and an optional 'bn' (no 'bt')")
    bn = doc.get("bn", "")
    if not isinstance(bn, str) or len(bn) > _MAX_NAME:
        raise CodecError("LwM2M JSON bn must be a string naming a LwM2M path")
    out: list[_Entry] = []
    for e in doc["e"]:
        if not isinstance(e, dict) or not set(e) <= {"n", *_LWM2M_JSON_VALUES}:
            raise CodecError("LwM2M JSON entries are objects with n and one of v, bv, sv, ov (no t)")
        name = e.get("n", "")
        values = [k for k in _LWM2M_JSON_VALUES if k in e]
        if not isinstance(name, str) or len(name) > _MAX_NAME or len(values) != 1:
            raise CodecError("LwM2M JSON entry needs a string n and exactly one value")
        raw = e[values[0]]
        kind = _LWM2M_JSON_VALUES[values[0]]
        ok = {
            "v": isinstance(raw, int | Decimal) and not isinstance(raw, bool),
            "vb": isinstance(raw, bool),
        }.get(kind, isinstance(raw, str))
        if not ok:
            raise CodecError(f"LwM2M JSON {values[0]} has the wrong type")
        out.append((parse_path(bn + name), kind, raw))
    return out


# --- CBOR (only what SenML needs) -----------------------------------------------------------------


def _cbor_head(major: int, arg: int) -> bytes:
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, n in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * n):
            return bytes([major << 5 | info]) + arg.to_bytes(n, "big")
    raise CodecError("CBOR integer out of range")


def _cbor_float(f: float) -> bytes:
    """The shortest IEEE 754 width that holds ``f`` exactly (RFC 8949 §4.1 preferred serialization)."""
    for fmt, ib in ((">e", 0xF9), (">f", 0xFA)):
        try:
            packed = struct.pack(fmt, f)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == f:
            return bytes([ib]) + packed
    return b"\xfb" + struct.pack(">d", f)


def _cbor_encode(obj: Any) -> bytes:
    if obj is True or obj is False:
        return b"\xf5" if obj else b"\xf4"
    if isinstance(obj, int):
        return _cbor_head(0, obj) if obj >= 0 else _cbor_head(1, -1 - obj)
    if isinstance(obj, float):
        return _cbor_float(obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        return _cbor_head(3, len(raw)) + raw
    if isinstance(obj, bytes):
        return _cbor_head(2, len(obj)) + obj
    if isinstance(obj, list):
        return _cbor_head(4, len(obj)) + b"".join(_cbor_encode(x) for x in obj)
    if isinstance(obj, dict):
        return _cbor_head(5, len(obj)) + b"".join(_cbor_encode(k) + _cbor_encode(v) for k, v in obj.items())
    raise CodecError(f"cannot encode {type(obj).__name__} in CBOR")


class _CborReader:
    """Read a SenML pack, and nothing else: an array of maps whose keys are ints or text and whose values
    are ints, floats, booleans and definite-length strings (RFC 8428 §6). Tags, null, nesting and
    indefinite-length strings are refused; indefinite arrays and maps are allowed. Each item consumes at
    least one byte, so the work is bounded by the payload size whatever lengths the heads claim."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def head(self) -> tuple[int, int, int | None]:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise CodecError("truncated CBOR")
        ib = data[pos]
        pos += 1
        major, info = ib >> 5, ib & 0x1F
        arg: int | None
        if info < 24:
            arg = info
        elif info <= 27:
            n = 1 << (info - 24)
            if pos + n > len(data):
                raise CodecError("truncated CBOR")
            arg = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        elif info == 31:
            arg = None
        else:
            raise CodecError("reserved CBOR additional information")
        self.pos = pos
        return major, info, arg

    def scalar(self) -> Any:
        major, info, arg = self.head()
        if arg is None:
            raise CodecError("indefinite-length item or break where a SenML value was expected")
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            end = self.pos + arg
            if end > len(self.data):
                raise CodecError("truncated CBOR string")
            raw = self.data[self.pos : end]
            self.pos = end
            return raw if major == 2 else _utf8(raw, "CBOR text")
        if major == 7:
            if info in (20, 21):
                return info == 21
            if info in (25, 26, 27):
                fmt, n = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}[info]
                return struct.unpack(fmt, arg.to_bytes(n, "big"))[0]
            raise CodecError("CBOR simple value not allowed in SenML")
        raise CodecError(f"CBOR major type {major} not allowed in a SenML record")

    def _more(self, count: int | None, done: int) -> bool:
        if count is not None:
            return done < count
        if self.pos >= len(self.data):
            raise CodecError("truncated CBOR")
        if self.data[self.pos] == 0xFF:
            self.pos += 1
            return False
        return True

    def pack(self) -> list[dict[int | str, Any]]:
        major, _, count = self.head()
        if major != 4:
            raise CodecError("SenML CBOR must be an array")
        records: list[dict[int | str, Any]] = []
        while self._more(count, len(records)):
            major, _, n = self.head()
            if major != 5:
                raise CodecError("SenML CBOR records must be maps")
            rec: dict[int | str, Any] = {}
            while self._more(n, len(rec)):
                key = self.scalar()
                if type(key) not in (int, str):
                    raise CodecError("SenML CBOR labels must be integers or text")
                if key in rec:
                    raise CodecError(f"duplicate SenML CBOR label {key!r}")
                rec[key] = self.scalar()
            records.append(rec)
        if self.pos != len(self.data):
            raise CodecError("trailing bytes after the SenML CBOR pack")
        return records


def _senml_cbor_records(data: bytes) -> list[dict[str, Any]]:
    """CBOR records with labels renamed to their JSON names; unknown integer labels are dropped (RFC 8428
    §4.4 lets a reader ignore them), a registered name used as a text label is refused."""
    if not data:
        return []  # as Leshan
    out = []
    for rec in _CborReader(data).pack():
        named: dict[str, Any] = {}
        for key, value in rec.items():
            if isinstance(key, int):
                name = _SENML_INT_LABELS.get(key)
                if name is None:
                    continue
            elif key in _SENML_REGISTERED:
                raise CodecError(f"SenML CBOR label {key!r} must be its integer label")
            else:
                name = key
            named[name] = value
        out.append(named)
    return out


# --- CoRE Link Format (RFC 6690; TS 1.1 §7.4.3, §6.2.1) -------------------------------------------

#: A parsed link: target and attributes (value ``None`` for a valueless attribute, else the text, unquoted).
Link: TypeAlias = tuple[str, dict[str, str | None]]
#: Attribute values :func:`link_format` accepts; a sequence becomes a quoted space-separated list.
AttrValue: TypeAlias = str | int | float | Sequence[str | int] | None

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_PARMNAME_CHARS: Final = frozenset(_ALNUM + "!#$&+-.^_`|~")  # RFC 5987 attr-char minus "*", "'", "%"
_PTOKEN_CHARS: Final = frozenset(_ALNUM + "!#$%&'()*+-./:<=>?@[]^_`{|}~")  # RFC 6690 §2 ptokenchar
_URI_CHARS: Final = frozenset(_ALNUM + "-._~:/?#[]@!$&'()*+,;=%")  # RFC 3986 reserved + unreserved + "%"
_HEX: Final = frozenset("0123456789ABCDEFabcdef")
# Attributes whose values are always written quoted: RFC 6690 §3.1-3.2 (rt, if), RFC 8288 (title, anchor),
# TS 1.1 (uri). Everything else is written bare when it is a valid ptoken: Leshan refuses a quoted ``ver``
# or ``lwm2m`` ("version should not be quoted", TS 1.1) and writes a single ``ct`` bare.
_QUOTED_ATTRS: Final = frozenset({"rt", "if", "title", "anchor", "uri"})


def _check_uri(uri: str) -> None:
    if not isinstance(uri, str) or any(c not in _URI_CHARS for c in uri):
        raise CodecError(f"invalid link target {str(uri)[:40]!r}")
    i = uri.find("%")
    while i >= 0:
        if len(uri[i + 1 : i + 3]) != 2 or not set(uri[i + 1 : i + 3]) <= _HEX:
            raise CodecError(f"invalid percent-encoding in link target {uri[:40]!r}")
        i = uri.find("%", i + 1)


def _check_parmname(name: str) -> None:
    if not isinstance(name, str) or not name or any(c not in _PARMNAME_CHARS for c in name):
        raise CodecError(f"invalid link attribute name {str(name)[:40]!r}")


def _quote(text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise CodecError("control character in a quoted link attribute")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scalar_attr(value: object) -> str:
    if isinstance(value, bool):
        raise CodecError("link attribute values cannot be booleans")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CodecError("link attribute values must be finite")
        return repr(value)
    if isinstance(value, str):
        return _utf8_ok(value, "link attribute")
    raise CodecError(f"invalid link attribute value {value!r}"[:80])


def _attr_text(name: str, value: AttrValue) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [_scalar_attr(v) for v in value]
        if not items or any(not s or " " in s for s in items):
            raise CodecError(f"invalid list value for link attribute {name}")
        if len(items) > 1:
            return _quote(" ".join(items))
        text = items[0]
    else:
        text = _scalar_attr(value)
    if name in _QUOTED_ATTRS or not text or any(c not in _PTOKEN_CHARS for c in text):
        return _quote(text)
    return text


def link_format(links: Iterable[tuple[str, Mapping[str, AttrValue]]]) -> str:
    """Serialize links as CoRE Link Format (RFC 6690 §2), e.g. a Register payload or a Discover response.

    ``[("/", {"rt": "oma.lwm2m", "ct": 11543}), ("/1/0", {})]`` gives ``</>;rt="oma.lwm2m";ct=11543,</1/0>``.
    ``None`` writes a valueless attribute; ``[110, 112]`` writes ``"110 112"`` (RFC 7252 §7.2.1).
    """
    out = []
    for uri, attrs in links:
        _check_uri(uri)
        parts = [f"<{uri}>"]
        for name, value in attrs.items():
            _check_parmname(name)
            parts.append(f";{name}" if value is None else f";{name}={_attr_text(name, value)}")
        out.append("".join(parts))
    return ",".join(out)


def parse_link_format(text: str | bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> list[Link]:
    """Parse CoRE Link Format (RFC 6690 §2) strictly: no whitespace, no duplicate attributes in one link.

    Values come back as text with quotes and escapes removed, so ``ver="1.1"`` and ``ver=1.1`` both give
    ``"1.1"``; the empty string is an empty link list. Linear time, raises only :class:`CodecError`.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        text = _utf8(bytes(text), "link format")
    if not isinstance(text, str):
        raise CodecError("link format must be text")
    if len(text) > max_size:
        raise CodecError(f"link format too large ({len(text)} > {max_size})")
    links: list[Link] = []
    n, pos = len(text), 0
    if n == 0:
        return links
    while True:
        if text[pos] != "<":
            raise CodecError(f"'<' expected at {pos}")
        end = text.find(">", pos + 1)
        if end < 0:
            raise CodecError("unterminated link target")
        uri = text[pos + 1 : end]
        _check_uri(uri)
        pos = end + 1
        attrs: dict[str, str | None] = {}
        while pos < n and text[pos] == ";":
            start = pos = pos + 1
            while pos < n and text[pos] in _PARMNAME_CHARS:
                pos += 1
            name = text[start:pos]
            if not name:
                raise CodecError(f"attribute name expected at {start}")
            if name in attrs:
                raise CodecError(f"duplicate attribute {name!r} in link {uri!r}")
            value: str | None = None
            if pos < n and text[pos] == "=":
                pos += 1
                if pos < n and text[pos] == '"':
                    value, pos = _parse_quoted(text, pos)
                else:
                    start = pos
                    while pos < n and text[pos] in _PTOKEN_CHARS:
                        pos += 1
                    if start == pos:
                        raise CodecError(f"attribute value expected at {start}")
                    value = text[start:pos]
            attrs[name] = value
        links.append((uri, attrs))
        if pos == n:
            return links
        if text[pos] != "," or pos + 1 == n:
            raise CodecError(f"',' and another link expected at {pos}")
        pos += 1


def _parse_quoted(text: str, pos: int) -> tuple[str, int]:
    """RFC 2616 quoted-string starting at ``text[pos] == '"'``; returns the unescaped value and the next index."""
    out = []
    pos += 1
    n = len(text)
    while True:
        if pos >= n:
            raise CodecError("unterminated quoted string")
        c = text[pos]
        if c == '"':
            return "".join(out), pos + 1
        if c == "\\":
            if pos + 1 >= n:
                raise CodecError("unterminated quoted string")
            c = text[pos + 1]
            pos += 1
        if ord(c) < 0x20 or ord(c) == 0x7F:
            raise CodecError("control character in a quoted string")
        out.append(c)
        pos += 1


def registration_links(
    objects: Mapping[int, Iterable[int]],
    *,
    content_format: int | None = None,
    versions: Mapping[int, str] | None = None,
) -> list[tuple[str, dict[str, AttrValue]]]:
    """Links for a Register/Update payload (TS 1.1 §6.2.1), objects and instances in id order.

    ``content_format`` adds the root link ``</>;rt="oma.lwm2m";ct=...``; ``versions`` adds ``ver=`` to an
    object's own link (written bare, as Leshan requires). An object without instances is listed alone.
    Security (0) and OSCORE (21) are left out: TS 1.1 §6.2.1 says they MUST NOT be registered.
    """
    links: list[tuple[str, dict[str, AttrValue]]] = []
    if content_format is not None:
        links.append(("/", {"rt": "oma.lwm2m", "ct": int(content_format)}))
    for oid in sorted(objects):
        if oid in (0, 21):
            continue
        instances = sorted(objects[oid])
        attrs: dict[str, AttrValue] = {"ver": versions[oid]} if versions and oid in versions else {}
        if attrs or not instances:
            links.append((format_path((oid,)), attrs))
        links.extend((format_path((oid, iid)), {}) for iid in instances)
    return links
