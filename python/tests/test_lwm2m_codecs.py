"""LwM2M data-format codecs: golden vectors from the TS and Leshan, round trips, interop edge cases, fuzzing.

Golden vectors cite their source. "Leshan" means eclipse-leshan/leshan, leshan-lwm2m-core/src/test/java/
org/eclipse/leshan/core/...; its TLV vectors are themselves the examples of the LwM2M TS (TS 1.0 §6.4.3,
carried over to TS 1.1 §7.4.6), which Leshan's comments number after an early draft (§4.3.x).
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from dataclasses import dataclass

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridkey.transports.lwm2m.codecs import (
    LINK,
    LWM2M_JSON,
    OPAQUE,
    SENML_CBOR,
    SENML_JSON,
    TEXT,
    TLV,
    CodecError,
    MultiResource,
    Object,
    ObjectInstance,
    Resource,
    ResourceInstance,
    ResourceSpec,
    RType,
    UnknownResourceError,
    UnsupportedFormatError,
    decode,
    encode,
    format_path,
    link_format,
    parse_link_format,
    parse_path,
    registration_links,
)

STRUCTURED = (TLV, SENML_JSON, SENML_CBOR, LWM2M_JSON)
ALL_FORMATS = (TEXT, OPAQUE, *STRUCTURED)
STR, INT, UINT, FLT, BOOL, OPQ, TIM, LNK, CLNK, EXE = (
    RType.STRING,
    RType.INTEGER,
    RType.UNSIGNED_INTEGER,
    RType.FLOAT,
    RType.BOOLEAN,
    RType.OPAQUE,
    RType.TIME,
    RType.OBJLNK,
    RType.CORELNK,
    RType.NONE,
)


def multi(t: RType) -> ResourceSpec:
    return ResourceSpec(t, multiple=True)


def single(t: RType) -> ResourceSpec:
    return ResourceSpec(t, multiple=False)


# Types of the resources the vectors use: Device (3), Server (1), ACL (2) from the OMA registry DDFs; objects
# 65/66 as Leshan's LwM2mNodeDecoderTest.loadModel defines them (after TS 1.0 figure 28); 3442/180 Corelnk as
# Leshan's test model; plus a few for edge cases.
SCHEMA: dict[tuple[int, int], RType | ResourceSpec] = {
    (3, 0): STR,
    (3, 1): STR,
    (3, 2): STR,
    (3, 3): STR,
    (3, 4): EXE,
    (3, 6): multi(INT),
    (3, 7): multi(INT),
    (3, 8): multi(INT),
    (3, 9): single(INT),
    (3, 10): INT,
    (3, 11): multi(INT),
    (3, 13): TIM,
    (3, 14): STR,
    (3, 15): STR,
    (3, 16): STR,
    (3, 22): multi(LNK),
    (1, 0): INT,
    (1, 1): INT,
    (1, 6): BOOL,
    (1, 7): STR,
    (2, 0): INT,
    (2, 1): INT,
    (2, 2): multi(INT),
    (2, 3): INT,
    (65, 0): multi(LNK),
    (65, 1): STR,
    (65, 2): INT,
    (66, 0): STR,
    (66, 1): STR,
    (66, 2): LNK,
    (3442, 180): CLNK,
    (0, 3): OPQ,
    (0, 16): UINT,
    (5, 0): single(OPQ),
    (6, 3): FLT,
    (7, 0): single(UINT),
    (7, 1): multi(FLT),
    (7, 2): BOOL,
}

DEVICE = ObjectInstance(
    0,
    [
        Resource(0, STR, "Open Mobile Alliance"),
        Resource(1, STR, "Lightweight M2M Client"),
        Resource(2, STR, "345000123"),
        Resource(3, STR, "1.0"),
        MultiResource(6, INT, {0: 1, 1: 5}),
        MultiResource(7, INT, {0: 3800, 1: 5000}),
        MultiResource(8, INT, {0: 125, 1: 900}),
        Resource(9, INT, 100),
        Resource(10, INT, 15),
        MultiResource(11, INT, {0: 0}),
        Resource(13, TIM, 1367491215),
        Resource(14, STR, "+02:00"),
        Resource(16, STR, "U"),
    ],
)

# --- golden vectors: TLV ----------------------------------------------------------------------------

# Leshan node/codec/LwM2mNodeEncoderTest + LwM2mNodeDecoderTest ENCODED_DEVICE_WITHOUT_INSTANCE: Device
# instance 0 as an array of resource TLVs (the TS's "Read /3/0" TLV example).
DEVICE_TLV = bytes.fromhex(
    "C800144F70656E204D6F62696C6520416C6C69616E6365C801164c69676874776569676874204d324d20436c69656e74"
    "C80209333435303030313233C303312E30860641000141010588070842000ED842011388870841007D42010384C10964"
    "C10A0F830B410000C40D5182428FC60E2B30323A3030C11055"
)
# ENCODED_DEVICE_WITH_INSTANCE: the same wrapped in one object instance TLV (the TS's "Read /3" example).
DEVICE_TLV_WRAPPED = bytes.fromhex("080079") + DEVICE_TLV

ACL = Object(
    2,
    [
        ObjectInstance(
            0, [Resource(0, INT, 1), Resource(1, INT, 0), MultiResource(2, INT, {127: 7}), Resource(3, INT, 127)]
        ),
        ObjectInstance(
            2,
            [Resource(0, INT, 3), Resource(1, INT, 0), MultiResource(2, INT, {127: 7, 310: 1}), Resource(3, INT, 127)],
        ),
    ],
)
SERVER = Object(
    1,
    [ObjectInstance(0, [Resource(0, INT, 1), Resource(1, INT, 86400), Resource(6, BOOL, True), Resource(7, STR, "U")])],
)
OBJ65 = ObjectInstance(
    0,
    [MultiResource(0, LNK, {0: (66, 0), 1: (66, 1)}), Resource(1, STR, "8613800755500"), Resource(2, INT, 0x12345678)],
)
OBJ66 = Object(
    66,
    [
        ObjectInstance(
            0, [Resource(0, STR, "myService 1"), Resource(1, STR, "Internet.15.234"), Resource(2, LNK, (67, 0))]
        ),
        ObjectInstance(
            1, [Resource(0, STR, "myService 2"), Resource(1, STR, "Internet.15.235"), Resource(2, LNK, (65535, 65535))]
        ),
    ],
)
CORELNK_3442 = (
    '</>;rt="oma.lwm2m";ct="60 110 112 1542 1543 11542 11543",</1>;ver=1.1,</1/0>,</2>,</3>;ver=1.1,</3/0>,</3442/0>'
)

TLV_VECTORS = [
    # (hex, path, node); the comment above each vector names its source
    (DEVICE_TLV.hex(), "/3/0", DEVICE),
    (DEVICE_TLV_WRAPPED.hex(), "/3", Object(3, [DEVICE])),
    # Leshan LwM2mNodeDecoderTest ENCODED_ACL (TS example: ACL object, 2 instances; 16-bit resource instance id 310)
    ("08000EC10001C101008302417F07C1037F080212C10003C101008702417F0761013601C1037F", "/2", ACL),
    # Leshan ENCODED_SERVER (TS example: Server object, 1 instance; Lifetime 86400 needs 4 bytes)
    ("08000FC10001C40100015180C10601C10755", "/1", SERVER),
    # Leshan ENCODED_OBJ65 (TS example: multiple Objlnk resource, 4-byte Integer)
    ("88000C440000420000440100420001C8010D38363133383030373535353030C40212345678", "/65/0", OBJ65),
    # Leshan ENCODED_OBJ66 (TS example: Objlnk per instance; the second is the null link FFFF:FFFF)
    (
        "080026C8000B6D79536572766963652031C8010F496E7465726E65742E31352E323334C40200430000"
        "080126C8000B6D79536572766963652032C8010F496E7465726E65742E31352E323335C402FFFFFFFF",
        "/66",
        OBJ66,
    ),
    # Leshan ENCODED_OBJ3442: a Corelnk value (resource 0xB4 = 180, 8-bit length 0x6F), hex copied verbatim
    (
        "080072c8b46f3c2f3e3b72743d226f6d612e6c776d326d223b63743d223630203131302031313220313534322031353433203131"
        "353432203131353433222c3c2f313e3b7665723d312e312c3c2f312f303e2c3c2f323e2c3c2f333e3b7665723d312e312c3c2f33"
        "2f303e2c3c2f333434322f303e",
        "/3442",
        Object(3442, [ObjectInstance(0, [Resource(180, CLNK, CORELNK_3442)])]),
    ),
    # Leshan tlv_manufacturer_resource: one resource value TLV
    ("C800144F70656E204D6F62696C6520416C6C69616E6365", "/3/0/0", Resource(0, STR, "Open Mobile Alliance")),
]


@pytest.mark.parametrize(("hexdata", "path", "node"), TLV_VECTORS)
def test_tlv_golden_vectors_encode_and_decode(hexdata, path, node):
    data = bytes.fromhex(hexdata)
    assert decode(data, path, TLV, SCHEMA) == node
    assert encode(node, path, TLV) == data


def test_tlv_object_instance_at_object_path_is_wrapped():
    # Leshan tlv_encode_device_object_instance_as_instance: an instance encoded for /3 gets the instance TLV.
    assert encode(DEVICE, "/3", TLV) == DEVICE_TLV_WRAPPED
    # ...and without an id (Create, client picks the id) it is the bare resource array; decoding gives id None.
    assert encode(ObjectInstance(None, DEVICE.resources), "/3", TLV) == DEVICE_TLV
    assert decode(DEVICE_TLV, "/3", TLV, SCHEMA) == Object(3, [ObjectInstance(None, DEVICE.resources)])


def test_tlv_tolerates_a_consistent_instance_wrapper_like_leshan():
    # Leshan tlv_resource_with_undesired_object_instance: tolerated when the id matches, refused otherwise.
    wrapped = bytes.fromhex("0800") + bytes([0x03]) + bytes.fromhex("C10955")
    assert decode(wrapped, "/3/0/9", TLV, SCHEMA) == Resource(9, INT, 0x55)
    assert decode(DEVICE_TLV_WRAPPED, "/3/0", TLV, SCHEMA) == DEVICE
    with pytest.raises(CodecError):
        decode(bytes.fromhex("0801") + bytes([0x03]) + bytes.fromhex("C10955"), "/3/0/9", TLV, SCHEMA)


@pytest.mark.parametrize(
    ("hexdata", "path", "node"),
    [
        # Leshan LwM2mNodeDecoderTest.tlv_power_source__array_values: bare resource instance TLVs at /3/0/6
        ("410001410105", "/3/0/6", MultiResource(6, INT, {0: 1, 1: 5})),
        # tlv_power_source__multiple_resource: the same inside a multiple resource TLV
        ("8606410001410105", "/3/0/6", MultiResource(6, INT, {0: 1, 1: 5})),
        # tlv_empty_object / tlv_empty_instance / tlv_empty_multi_resource
        ("", "/2", Object(2, [])),
        ("", "/2/0", ObjectInstance(0, [])),
        ("", "/3/0/6", MultiResource(6, INT, {})),
        # tlv_instance_without_id_tlv: resources straight under /2 are one instance whose id the client picks
        ("C1010BC1030A", "/2", Object(2, [ObjectInstance(None, [Resource(1, INT, 11), Resource(3, INT, 10)])])),
    ],
)
def test_tlv_decode_vectors_from_leshan(hexdata, path, node):
    assert decode(bytes.fromhex(hexdata), path, TLV, SCHEMA) == node


@pytest.mark.parametrize(
    ("hexdata", "path"),
    [
        ("", "/3/0/9"),  # Leshan tlv_empty_single_resource
        ("88160C440000640001440000650002", "/3/0/22"),  # tlv_invalid_multi_resource_2_instance_with_the_same_id
        ("C10901C10902", "/3/0"),  # tlv_invalid_object__instance_2_resources_with_the_same_id
        ("0300C10901" * 2, "/3"),  # tlv_invalid_object_2_instances_with_the_same_id
        ("28FFFF03C10901", "/3"),  # instance id 65535 is reserved
        ("C10901", "/3/0/10"),  # resource TLV id does not match the path
        ("410001410105", "/3/0/6/0"),  # two TLVs for one resource instance
        ("C10601", "/3/0/6"),  # multiple resource as a single value
        ("8309410001", "/3/0/9"),  # single resource as multiple
        ("860641000141", "/3/0/6"),  # truncated inside a multiple resource
        ("C1090141", "/3/0"),  # trailing partial header
    ],
)
def test_invalid_tlv_structures_are_rejected(hexdata, path):
    with pytest.raises(CodecError):
        decode(bytes.fromhex(hexdata), path, TLV, SCHEMA)


@pytest.mark.parametrize(("size", "header"), [(7, "c700"), (8, "c80008"), (300, "d000012c"), (70_000, "d800011170")])
def test_tlv_length_fields(size, header):
    node = Resource(0, OPQ, bytes(size))
    data = encode(node, "/5/0/0", TLV)
    assert data[: len(header) // 2].hex() == header
    assert decode(data, "/5/0/0", TLV, SCHEMA) == node
    big = Resource(300, STR, "x" * size)  # 16-bit resource id too
    assert decode(encode(big, "/9/0/300", TLV), "/9/0/300", TLV, {(9, 300): STR}) == big


def test_tlv_broken_payload_from_leshan_is_rejected():
    # Leshan tlv/TlvDecoderTest.decode_broken_tlv
    with pytest.raises(CodecError):
        decode(bytes.fromhex("0011223344556677889900"), "/3", TLV, SCHEMA)


# --- golden vectors: SenML, LwM2M JSON, TEXT ---------------------------------------------------------

# Leshan LwM2mNodeEncoderTest.senml_json_encode_device_object_instance (root path "")
DEVICE_SENML_JSON = (
    '[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"1","vs":"Lightweight M2M Client"},'
    '{"n":"2","vs":"345000123"},{"n":"3","vs":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"7/0","v":3800},'
    '{"n":"7/1","v":5000},{"n":"8/0","v":125},{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},'
    '{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","vs":"+02:00"},{"n":"16","vs":"U"}]'
)
# Leshan LwM2mNodeEncoderTest.json_encode_device_object_instance (legacy LwM2M JSON)
DEVICE_LWM2M_JSON = (
    '{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"1","sv":"Lightweight M2M Client"},'
    '{"n":"2","sv":"345000123"},{"n":"3","sv":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"7/0","v":3800},'
    '{"n":"7/1","v":5000},{"n":"8/0","v":125},{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},'
    '{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","sv":"+02:00"},{"n":"16","sv":"U"}]}'
)

TEXTUAL_VECTORS = [
    (DEVICE_SENML_JSON, "/3/0", SENML_JSON, DEVICE),
    (DEVICE_LWM2M_JSON, "/3/0", LWM2M_JSON, DEVICE),
    # Leshan senml_json_encode_single_resource: no "n" for a single value
    ('[{"bn":"/3/0/0","vs":"Open Mobile Alliance"}]', "/3/0/0", SENML_JSON, Resource(0, STR, "Open Mobile Alliance")),
    # Leshan senml_json_encode_multiple_resource
    (
        '[{"bn":"/3/0/7/","n":"0","v":3800},{"n":"1","v":5000}]',
        "/3/0/7",
        SENML_JSON,
        MultiResource(7, INT, {0: 3800, 1: 5000}),
    ),
    # Leshan senml_json_encode_opaque_resource: base64url without padding ("q83v" = ABCDEF)
    ('[{"bn":"/0/0/3","vd":"q83v"}]', "/0/0/3", SENML_JSON, Resource(3, OPQ, bytes.fromhex("ABCDEF"))),
    # Leshan text_encode_single_resource_date / text_encode_opaque_as_base64_string
    ("1367491215", "/3/0/13", TEXT, Resource(13, TIM, 1367491215)),
    ("AQIDBAU=", "/0/0/3", TEXT, Resource(3, OPQ, bytes([1, 2, 3, 4, 5]))),
    # Leshan text_encode_single_resource_float (shortest repr, as Java's Double.toString writes it)
    ("56.4", "/6/0/3", TEXT, Resource(3, FLT, 56.4)),
]


@pytest.mark.parametrize(("text", "path", "fmt", "node"), TEXTUAL_VECTORS)
def test_textual_golden_vectors_encode_and_decode(text, path, fmt, node):
    assert encode(node, path, fmt) == text.encode()
    assert decode(text.encode(), path, fmt, SCHEMA) == node


def test_senml_cbor_golden_vector():
    # Leshan LwM2mNodeEncoderTest.senml_cbor_encode_opaque_resource and LwM2mNodeDecoderTest
    # .senml_cbor_decode_opaque_resource: [{-2: "/0/0/3", 8: h'ABCDEF'}]
    data = bytes.fromhex("81a221662f302f302f330843abcdef")
    node = Resource(3, OPQ, bytes.fromhex("ABCDEF"))
    assert encode(node, "/0/0/3", SENML_CBOR) == data
    assert decode(data, "/0/0/3", SENML_CBOR, SCHEMA) == node
    # Leshan senml_cbor_empty_multi_resource: an empty array is a multiple resource with no instances
    assert decode(bytes.fromhex("80"), "/3/0/7", SENML_CBOR, SCHEMA) == MultiResource(7, INT, {})


@pytest.mark.parametrize(
    ("payload", "path", "node"),
    [
        # Leshan LwM2mNodeDecoderTest.senml_json_decode_single_resource: a full name in "n", no "bn"
        ('[{"n":"/6/0/3","v":20.0}]', "/6/0/3", Resource(3, FLT, 20.0)),
        # senml_json_decode_single_resource_using_exponantial_notation: an integral Time written as a float
        ('[{"bn":"/3/0/13","v":1.638435E9}]', "/3/0/13", Resource(13, TIM, 1638435000)),
        # senml_json_decode_ulong / senml_json_decode_long: 64-bit values survive exactly
        ('[{"n":"/0/0/16","v":18446744073709551615}]', "/0/0/16", Resource(16, UINT, 2**64 - 1)),
        ('[{"n":"/3/0/9","v":9223372036854775800}]', "/3/0/9", Resource(9, INT, 9223372036854775800)),
        # Leshan's SenML encoder writes Objlnk in "vs"; TS 1.1 says "vlo". Both are read.
        ('[{"bn":"/66/0/2","vs":"67:0"}]', "/66/0/2", Resource(2, LNK, (67, 0))),
        ('[{"bn":"/66/0/2","vlo":"67:0"}]', "/66/0/2", Resource(2, LNK, (67, 0))),
        # base name applies to following records until replaced (RFC 8428 §4.5.1)
        (
            '[{"bn":"/3/0/","n":"9","v":1},{"n":"10","v":2},{"bn":"/3/0/6/","n":"3","v":4}]',
            "/3/0",
            ObjectInstance(0, [Resource(9, INT, 1), Resource(10, INT, 2), MultiResource(6, INT, {3: 4})]),
        ),
    ],
)
def test_senml_json_decode_vectors(payload, path, node):
    assert decode(payload.encode(), path, SENML_JSON, SCHEMA) == node


def test_registration_payload():
    expected = '</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</33001/0>,</33001/1>'
    links = [("/", {"rt": "oma.lwm2m", "ct": 11543}), ("/1/0", {}), ("/3/0", {}), ("/33001/0", {}), ("/33001/1", {})]
    assert link_format(links) == expected
    assert link_format(registration_links({3: [0], 1: [0], 33001: [1, 0], 0: [0]}, content_format=11543)) == expected
    assert parse_link_format(expected) == [(u, {k: str(v) for k, v in a.items()}) for u, a in links]
    # Object versions are written bare (Leshan refuses ver="1.1"), objects without instances stand alone.
    assert (
        link_format(registration_links({3305: [0], 5: []}, versions={3305: "1.1"})) == "</5>,</3305>;ver=1.1,</3305/0>"
    )


def test_link_format_vector_from_leshan_round_trips():
    # Leshan LwM2mNodeDecoderTest ENCODED_OBJ3442's value: quoted ct list, bare ver, valueless links
    links = parse_link_format(CORELNK_3442)
    assert links[0] == ("/", {"rt": "oma.lwm2m", "ct": "60 110 112 1542 1543 11542 11543"})
    assert links[1] == ("/1", {"ver": "1.1"})
    assert [u for u, _ in links] == ["/", "/1", "/1/0", "/2", "/3", "/3/0", "/3442/0"]
    assert link_format(links) == CORELNK_3442
    assert link_format([("/3/0/7", {"pmin": 10, "pmax": 60, "gt": 2.5, "dim": None, "ct": [110, 112]})]) == (
        '</3/0/7>;pmin=10;pmax=60;gt=2.5;dim;ct="110 112"'
    )
    assert parse_link_format('</a>;title="say \\"hi\\" \\\\ bye"') == [("/a", {"title": 'say "hi" \\ bye'})]


@pytest.mark.parametrize(
    "text",
    ["<", "</>;", "</>;=1", "</>,", "</> ", "</>;a=", '</>;a="x', "</>;a=1;a=2", "</%zz>", "/3/0", "</a>b", ",</a>"],
)
def test_malformed_link_format_is_rejected(text):
    with pytest.raises(CodecError):
        parse_link_format(text)


# --- interop edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtype", "value", "tlv_hex"),
    [
        (INT, 0, "00"),
        (INT, -1, "ff"),
        (INT, 127, "7f"),
        (INT, 128, "0080"),
        (INT, -128, "80"),
        (INT, -129, "ff7f"),
        (INT, 32768, "00008000"),
        (INT, 2**31, "0000000080000000"),
        (INT, -(2**63), "8000000000000000"),
        (INT, 2**63 - 1, "7fffffffffffffff"),
        (TIM, 1367491215, "5182428f"),
        (UINT, 200, "00c8"),  # never 0xC8 alone: Leshan reads TLV integers signed
        (UINT, 2**63, "8000000000000000"),
        (UINT, 2**64 - 1, "ffffffffffffffff"),
        (FLT, 1.0, "3ff0000000000000"),  # always 8 bytes, like Leshan
        (FLT, -0.5, "bfe0000000000000"),
        (BOOL, True, "01"),
        (BOOL, False, "00"),
        (LNK, (0x1234, 0x5678), "12345678"),  # Leshan TlvDecoderTest.decode_object_link
        (STR, "", ""),
        (OPQ, b"", ""),
    ],
)
def test_tlv_value_encodings(rtype, value, tlv_hex):
    node = Resource(5, rtype, value)
    data = encode(node, "/9/0/5", TLV)
    assert data[2 if len(tlv_hex) // 2 < 8 else 3 :].hex() == tlv_hex
    assert decode(data, "/9/0/5", TLV, {(9, 5): rtype}) == node


def test_tlv_unsigned_is_read_unsigned_and_short_floats_accepted():
    # TS 1.1 Appendix C: Unsigned Integer is an unsigned binary integer; Float may be 4 bytes.
    assert decode(bytes.fromhex("C105FF"), "/9/0/5", TLV, {(9, 5): UINT}).value == 255
    assert decode(bytes.fromhex("C105FF"), "/9/0/5", TLV, {(9, 5): INT}).value == -1
    assert decode(bytes.fromhex("C4053FC00000"), "/9/0/5", TLV, {(9, 5): FLT}).value == 1.5


@pytest.mark.parametrize(
    ("hexdata", "rtype"),
    [
        ("C305000000", INT),  # 3-byte integer
        ("C0 05", INT),  # empty integer
        ("C10502", BOOL),  # Boolean 2
        ("C305000000", LNK),  # 3-byte Objlnk
        ("C405FFFF0000", LNK),  # half-null Objlnk (Leshan's ObjectLink refuses it)
        ("C2050000", FLT),  # 2-byte float
        ("C8050A" + "00" * 10, FLT),  # 10-byte float
        ("C4057FC00000", FLT),  # NaN
        ("C105FF", STR),  # invalid UTF-8
    ],
)
def test_tlv_invalid_values_are_rejected(hexdata, rtype):
    with pytest.raises(CodecError):
        decode(bytes.fromhex(hexdata.replace(" ", "")), "/9/0/5", TLV, {(9, 5): rtype})


def test_float_and_integer_stay_distinct_on_the_wire():
    f, i = Resource(2, FLT, 1.0), Resource(2, INT, 1)
    assert encode(f, "/9/0/2", SENML_JSON) == b'[{"bn":"/9/0/2","v":1.0}]'
    assert encode(i, "/9/0/2", SENML_JSON) == b'[{"bn":"/9/0/2","v":1}]'
    assert encode(f, "/9/0/2", SENML_CBOR) == bytes.fromhex("81a221662f392f302f3202f93c00")  # half float 1.0
    assert encode(i, "/9/0/2", SENML_CBOR) == bytes.fromhex("81a221662f392f302f320201")
    assert cbor2.loads(encode(Resource(2, FLT, 0.1), "/9/0/2", SENML_CBOR))[0][2] == 0.1  # needs a double
    assert encode(f, "/9/0/2", TEXT) == b"1.0"
    assert encode(i, "/9/0/2", TEXT) == b"1"
    assert encode(Resource(2, FLT, 3), "/9/0/2", TEXT) == b"3.0"  # an int given for a Float is sent as a float


def test_number_conversions_are_lossless_only():
    def dec(payload: str, rtype: RType):
        return decode(payload.encode(), "/9/0/2", SENML_JSON, {(9, 2): rtype}).value

    assert dec('[{"n":"/9/0/2","v":5.0}]', INT) == 5  # JSON has one number type
    assert dec('[{"n":"/9/0/2","v":5}]', FLT) == 5.0
    assert dec('[{"n":"/9/0/2","v":-1e2}]', INT) == -100
    for bad, rtype in [
        ("5.5", INT),
        ("1e300", INT),
        ("1e-300", INT),
        ("-1", UINT),
        ("18446744073709551616", UINT),
        ("9223372036854775808", INT),
        ("9007199254740993", FLT),  # 2**53 + 1 has no double
        ("1e400", FLT),
        ('"5"', INT),
        ("true", INT),
    ]:
        with pytest.raises(CodecError):
            dec(f'[{{"n":"/9/0/2","v":{bad}}}]', rtype)
    cbor_float_for_int = cbor2.dumps([{-2: "/9/0/2", 2: 7.0}])
    assert decode(cbor_float_for_int, "/9/0/2", SENML_CBOR, {(9, 2): INT}).value == 7
    with pytest.raises(CodecError):
        decode(cbor2.dumps([{-2: "/9/0/2", 2: 7.5}]), "/9/0/2", SENML_CBOR, {(9, 2): INT})


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_empty_string_and_empty_opaque(fmt):
    if fmt is not OPAQUE:
        node = Resource(0, STR, "")
        assert decode(encode(node, "/3/0/0", fmt), "/3/0/0", fmt, SCHEMA) == node
    blob = Resource(3, OPQ, b"")
    assert decode(encode(blob, "/0/0/3", fmt), "/0/0/3", fmt, SCHEMA) == blob


@pytest.mark.parametrize("fmt", STRUCTURED)
def test_multi_instance_resources_sparse_ids_and_instance_paths(fmt):
    res = MultiResource(1, FLT, {0: -1.5, 7: 2.25, 65535: 1e300})
    assert decode(encode(res, "/7/0/1", fmt), "/7/0/1", fmt, SCHEMA) == res
    ri = ResourceInstance(7, FLT, 2.25)
    assert decode(encode(ri, "/7/0/1/7", fmt), "/7/0/1/7", fmt, SCHEMA) == ri
    empty = MultiResource(1, FLT, {})
    assert decode(encode(empty, "/7/0/1", fmt), "/7/0/1", fmt, SCHEMA) == empty


def test_every_format_carries_the_same_values():
    node = ObjectInstance(
        0,
        [
            Resource(0, UINT, 2**64 - 1),
            MultiResource(1, FLT, {0: 1.0, 1: -0.1, 2: 5e-324}),
            Resource(2, BOOL, False),
        ],
    )
    for fmt in STRUCTURED:
        assert decode(encode(node, "/7/0", fmt), "/7/0", fmt, SCHEMA) == node, fmt
    for r in (Resource(0, UINT, 2**64 - 1), Resource(2, BOOL, True), Resource(13, TIM, -5)):
        path = f"/{7 if r.id != 13 else 3}/0/{r.id}"
        values = {fmt: decode(encode(r, path, fmt), path, fmt, SCHEMA).value for fmt in (TEXT, *STRUCTURED)}
        assert set(values.values()) == {r.value}


def test_single_value_formats_refuse_structures():
    with pytest.raises(UnsupportedFormatError):
        encode(DEVICE, "/3/0", TEXT)
    with pytest.raises(UnsupportedFormatError):
        encode(MultiResource(6, INT, {0: 1}), "/3/0/6", TEXT)  # Leshan text_encode_multiple_instances
    with pytest.raises(UnsupportedFormatError):
        encode(Resource(9, INT, 1), "/3/0/9", OPAQUE)
    with pytest.raises(UnsupportedFormatError):
        decode(b"1", "/3/0/6", TEXT, SCHEMA)
    with pytest.raises(UnsupportedFormatError):
        decode(b"1", "/3/0", TEXT, SCHEMA)
    with pytest.raises(UnsupportedFormatError):
        decode(b"1", "/3/0/9", OPAQUE, SCHEMA)
    with pytest.raises(UnsupportedFormatError):
        encode(Resource(9, INT, 1), "/3/0/9", LINK)
    with pytest.raises(UnsupportedFormatError):
        decode(b"1", "/3/0/9", 9999, SCHEMA)
    assert decode(b"\x00\xff", "/5/0/0", OPAQUE, SCHEMA) == Resource(0, OPQ, b"\x00\xff")


@pytest.mark.parametrize(
    ("node", "path"),
    [
        (Resource(9, INT, 2**63), "/3/0/9"),
        (Resource(9, INT, True), "/3/0/9"),
        (Resource(0, UINT, -1), "/7/0/0"),
        (Resource(3, FLT, math.nan), "/6/0/3"),
        (Resource(3, FLT, math.inf), "/6/0/3"),
        (Resource(3, FLT, 2**53 + 1), "/6/0/3"),
        (Resource(2, LNK, (3, 65535)), "/66/0/2"),
        (Resource(2, LNK, (65536, 0)), "/66/0/2"),
        (Resource(0, STR, "\ud800"), "/3/0/0"),
        (Resource(0, STR, b"bytes"), "/3/0/0"),
        (Resource(4, EXE, None), "/3/0/4"),
        (Resource(180, CLNK, "not a link"), "/3442/0/180"),
        (Resource(9, INT, 1), "/3/0/10"),  # id does not match the path
        (ObjectInstance(1, []), "/3/0"),
        (Object(3, [ObjectInstance(65535, [])]), "/3"),
    ],
)
def test_invalid_nodes_do_not_encode(node, path):
    for fmt in STRUCTURED:
        with pytest.raises(CodecError):
            encode(node, path, fmt)


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ('[{"bn":"/3/0/9","v":1,"t":5}]', "/3/0/9"),  # time-stamped (Leshan refuses too)
        ('[{"bn":"/3/0/9","v":1,"bt":268435456}]', "/3/0/9"),
        ('[{"bn":"/3/0/9","v":1,"bv":2}]', "/3/0/9"),  # base value would change the value
        ('[{"bn":"/3/0/9","v":1,"x_":0}]', "/3/0/9"),  # must-understand field (RFC 8428 §4.4)
        ('[{"bn":"/3/0/9","v":1,"v":2}]', "/3/0/9"),  # duplicate key
        ('[{"bn":"/3/0/9","v":1,"vs":"1"}]', "/3/0/9"),  # two values
        ('[{"bn":"/3/0/9"}]', "/3/0/9"),  # no value
        ('[{"bn":"/3/0/9","v":NaN}]', "/3/0/9"),
        ('[{"bn":"/3/0/9","vs":"1"}]', "/3/0/9"),  # wrong value field for an Integer
        ('[{"bn":"/0/0/3","vd":"q83v="}]', "/0/0/3"),  # padded base64url (Leshan forbids it)
        ('[{"bn":"/0/0/3","vd":"AB"}]', "/0/0/3"),  # non-canonical: trailing bits set ("AA" is canonical)
        ('[{"bn":"/3/0/0","vs":"\\ud800"}]', "/3/0/0"),  # lone surrogate
        ('[{"bn":"/3/0/9","v":1},{"bn":"/3/0/9","v":2}]', "/3/0"),  # resource twice
        ('[{"bn":"/3/0/6","v":1}]', "/3/0/6"),  # multiple resource as a single value
        ('[{"bn":"/3/0/9/0","v":1}]', "/3/0/9"),  # single resource as instances
        ('[{"bn":"/3/1/9","v":1}]', "/3/0"),  # outside the request path
        ('[{"bn":"/3/0","v":1}]', "/3"),  # not a resource
        ('[{"bn":"/3/0/99","v":1}]', "/3/0"),  # unknown resource
        ('[{"bn":"/3/0/4","v":1}]', "/3/0/4"),  # executable
        ('[{"bn":"/3/0/09","v":1}]', "/3/0"),  # leading zero
        ('[{"bn":"/3/0/9","v":1}', "/3/0/9"),  # truncated
        ('{"bn":"/3/0/9","v":1}', "/3/0/9"),  # not an array
        ("[]", "/3/0/9"),  # a single resource needs its value
        ('[{"bn":"/66/0/2","vlo":"3:65535"}]', "/66/0/2"),
        ("[" * 100_000, "/3/0/9"),  # deep nesting
    ],
)
def test_bad_senml_json_is_rejected(payload, path):
    with pytest.raises(CodecError):
        decode(payload.encode(), path, SENML_JSON, SCHEMA)


def test_unknown_resource_is_reported_as_such():
    with pytest.raises(UnknownResourceError) as info:
        decode(bytes.fromhex("C16301"), "/3/0", TLV, SCHEMA)
    assert (info.value.object_id, info.value.resource_id) == (3, 99)


def test_schema_may_be_a_callable_or_ddf_like_objects():
    @dataclass(frozen=True)
    class ResourceDef:  # the shape of gridkey.transports.lwm2m.objects.ResourceDef
        type: str
        multiple: bool

    defs = {9: ResourceDef("Integer", False), 6: ResourceDef("Integer", True)}

    def schema(oid: int, rid: int) -> ResourceDef:
        return defs[rid]  # KeyError means "unknown resource"

    assert decode(bytes.fromhex("C10964"), "/3/0/9", TLV, schema) == Resource(9, INT, 100)
    with pytest.raises(CodecError):
        decode(bytes.fromhex("C10664"), "/3/0/6", TLV, schema)  # multiple resource sent single
    with pytest.raises(UnknownResourceError):
        decode(bytes.fromhex("C10A64"), "/3/0/10", TLV, schema)


def test_cbor_reader_accepts_what_the_rfc_allows_and_nothing_else():
    half = bytes.fromhex("81a221662f372f302f3102f93e00")  # [{-2: "/7/0/1", 2: 1.5 as half float}]
    assert decode(half, "/7/0/1", SENML_CBOR, {(7, 1): FLT}) == Resource(1, FLT, 1.5)
    indefinite = bytes.fromhex("9fbf21662f372f302f310203ffff")  # indefinite array and map
    assert decode(indefinite, "/7/0/1", SENML_CBOR, {(7, 1): INT}) == Resource(1, INT, 3)
    assert decode(cbor2.dumps([{-2: "/7/0/1", 2: 3, 99: "ignored"}]), "/7/0/1", SENML_CBOR, {(7, 1): INT}).value == 3
    for bad in [
        cbor2.dumps([{-2: "/7/0/1", 2: cbor2.CBORTag(2, b"\x01")}]),  # tags
        cbor2.dumps([{-2: "/7/0/1", 2: None}]),
        cbor2.dumps([{-2: "/7/0/1", 2: [3]}]),
        cbor2.dumps([{"bn": "/7/0/1", 2: 3}]),  # registered label spelled as text
        cbor2.dumps([{-2: "/7/0/1", 2: 3}]) + b"\x00",  # trailing byte
        cbor2.dumps({-2: "/7/0/1", 2: 3}),  # not an array
        bytes.fromhex("81a221662f372f302f31025f41034103ff"),  # indefinite byte string as a value
        bytes.fromhex("81a2") + bytes.fromhex("0102") * 2,  # duplicate label
        bytes.fromhex("9b" + "ff" * 8),  # claims 2**64 records
    ]:
        with pytest.raises(CodecError):
            decode(bad, "/7/0/1", SENML_CBOR, {(7, 1): INT})


def test_lwm2m_json_specifics():
    objlnk = Resource(2, LNK, (67, 0))
    assert encode(objlnk, "/66/0/2", LWM2M_JSON) == b'{"bn":"/66/0/2","e":[{"ov":"67:0"}]}'
    assert decode(b'{"bn":"/66/0/2","e":[{"sv":"67:0"}]}', "/66/0/2", LWM2M_JSON, SCHEMA) == objlnk  # Leshan's form
    blob = Resource(3, OPQ, b"\x01\x02\x03\x04\x05")
    assert encode(blob, "/0/0/3", LWM2M_JSON) == b'{"bn":"/0/0/3","e":[{"sv":"AQIDBAU="}]}'
    for bad in [b'{"bn":"/3/0/9","e":[{"v":1,"t":2}]}', b'{"bn":"/3/0/9","bt":1,"e":[{"v":1}]}', b'{"e":{}}', b""]:
        with pytest.raises(CodecError):
            decode(bad, "/3/0/9", LWM2M_JSON, SCHEMA)


@pytest.mark.parametrize(
    ("payload", "rtype"),
    [
        ("1_000", INT),
        ("\u0661", INT),  # Arabic-Indic digit one
        (" 1", INT),
        ("9223372036854775808", INT),
        ("-1", UINT),
        ("1.5", INT),
        ("inf", FLT),
        ("nan", FLT),
        ("1e999", FLT),
        ("0x10", FLT),
        ("true", BOOL),
        ("2", BOOL),
        ("AQIDBAU", OPQ),  # missing padding
        ("AQIDBAV=", OPQ),  # non-canonical
        ("3:65535", LNK),
        ("3", LNK),
        ("<a", CLNK),
    ],
)
def test_bad_plain_text_is_rejected(payload, rtype):
    with pytest.raises(CodecError):
        decode(payload.encode(), "/9/0/1", TEXT, {(9, 1): rtype})


def test_paths():
    assert parse_path("/3/0/1") == (3, 0, 1)
    assert parse_path("/") == ()
    assert parse_path((3, 0)) == (3, 0)
    assert format_path((3, 0, 1)) == "/3/0/1"
    for bad in ["3/0", "/3/", "/3//0", "/03", "/3/65535", "/65536", "/1/2/3/4/5", "/+3", "/3 ", (1, True), (-1,)]:
        with pytest.raises(CodecError):
            parse_path(bad)


def test_empty_senml_payload_is_an_empty_pack_like_leshan():
    assert decode(b"", "/3/0", SENML_JSON, SCHEMA) == ObjectInstance(0, [])
    assert decode(b"", "/3/0/6", SENML_CBOR, SCHEMA) == MultiResource(6, INT, {})
    with pytest.raises(CodecError):
        encode(Object(3, [ObjectInstance(None, [])]), "/3", SENML_JSON)  # SenML names need the instance id


def test_link_format_input_checks():
    assert parse_link_format(b"</1/0>") == [("/1/0", {})]
    for bad in [b"\xff", '</a>;t="\x01"', "x" * 11]:
        with pytest.raises(CodecError):
            parse_link_format(bad, max_size=10)
    for links in [
        [("/a b", {})],
        [("/a", {"": 1})],
        [("/a", {"t": True})],
        [("/a", {"t": math.nan})],
        [("/a", {"t": []})],
    ]:
        with pytest.raises(CodecError):
            link_format(links)


def test_size_limit():
    with pytest.raises(CodecError):
        decode(b"x" * 101, "/3/0/0", TEXT, SCHEMA, max_size=100)


# --- property tests -------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
CORELNK_VALUES = ["", "</1/0>", '</>;rt="oma.lwm2m";ct=110,</3/0>', CORELNK_3442, '</x>;title="a,b;c"']
VALUES = {
    STR: st.text(max_size=12),
    INT: INT64,
    UINT: st.integers(0, 2**64 - 1),
    FLT: st.floats(allow_nan=False, allow_infinity=False),
    BOOL: st.booleans(),
    OPQ: st.binary(max_size=12),
    TIM: INT64,
    LNK: st.one_of(st.just((65535, 65535)), st.tuples(st.integers(0, 65534), st.integers(0, 65534))),
    CLNK: st.sampled_from(CORELNK_VALUES),
}
VALUE_TYPES = list(VALUES)
IDS = st.integers(0, 65535)


@st.composite
def resource_for(draw, rid: int, rtype: RType, multiple: bool):
    if multiple:
        return MultiResource(rid, rtype, draw(st.dictionaries(IDS, VALUES[rtype], max_size=3)))
    return Resource(rid, rtype, draw(VALUES[rtype]))


@st.composite
def instance_for(draw, iid: int | None, shape: dict[int, tuple[RType, bool]]):
    rids = draw(st.lists(st.sampled_from(sorted(shape)), unique=True)) if shape else []
    return ObjectInstance(iid, [draw(resource_for(rid, *shape[rid])) for rid in rids])


@st.composite
def cases(draw, kinds=("object", "instance", "resource", "resource_instance")):
    """(node, path, schema) for a request on a random object, with a schema that matches the node."""
    oid = draw(IDS)
    kind = draw(st.sampled_from(kinds))
    shape = draw(st.dictionaries(IDS, st.tuples(st.sampled_from(VALUE_TYPES), st.booleans()), min_size=1, max_size=4))
    schema = {(oid, rid): ResourceSpec(t, m) for rid, (t, m) in shape.items()}
    if kind == "object":
        iids = draw(st.lists(st.integers(0, 65534), unique=True, max_size=3))
        return Object(oid, [draw(instance_for(i, shape)) for i in iids]), (oid,), schema
    iid = draw(st.integers(0, 65534))
    if kind == "instance":
        return draw(instance_for(iid, shape)), (oid, iid), schema
    rid = draw(st.sampled_from(sorted(shape)))
    rtype, multiple = shape[rid]
    if kind == "resource":
        return draw(resource_for(rid, rtype, multiple)), (oid, iid, rid), schema
    schema[(oid, rid)] = ResourceSpec(rtype, True)
    ri = draw(IDS)
    return ResourceInstance(ri, rtype, draw(VALUES[rtype])), (oid, iid, rid, ri), schema


def senml_view(node):
    """What SenML/JSON can carry: no records for an empty multiple resource, nor for an empty instance inside
    an object (TLV keeps both; at the request path itself they decode back as empty)."""
    if isinstance(node, Object):
        kept = [senml_view(i) for i in node.instances]
        return Object(node.id, [i for i in kept if i.resources])
    if isinstance(node, ObjectInstance):
        return ObjectInstance(
            node.id, [r for r in node.resources if not (isinstance(r, MultiResource) and not r.instances)]
        )
    return node


@given(cases(), st.sampled_from(STRUCTURED))
def test_round_trip_every_structured_format(case, fmt):
    node, path, schema = case
    decoded = decode(encode(node, path, fmt), path, fmt, schema)
    expected = node if fmt is TLV else senml_view(node)
    assert decoded == expected
    assert repr(decoded) == repr(expected)  # same value types, float signs and instance order too


@given(cases(kinds=("resource", "resource_instance")))
def test_round_trip_single_values_in_every_format(case):
    node, path, schema = case
    if isinstance(node, MultiResource):
        return
    formats = [TEXT, *STRUCTURED] + ([OPAQUE] if node.type is OPQ else [])
    for fmt in formats:
        decoded = decode(encode(node, path, fmt), path, fmt, schema)
        assert repr(decoded) == repr(node), fmt


# A schema covering every type for the fuzzers: resource id r of any object has type TYPES[r % 10].
FUZZ_TYPES = [*VALUE_TYPES, EXE]


def fuzz_schema(oid: int, rid: int) -> ResourceSpec:
    return ResourceSpec(FUZZ_TYPES[rid % len(FUZZ_TYPES)], multiple=None if rid < 20 else rid % 2 == 0)


FUZZ_PATHS = st.sampled_from(["/3", "/3/0", "/3/0/0", "/3/0/2", "/3/0/7", "/3/0/21", "/3/0/7/0", "/3/0/22/1"])


def decodes_or_rejects(data: bytes, path: str, fmt: int) -> None:
    with contextlib.suppress(CodecError):
        decode(data, path, fmt, fuzz_schema)


@given(st.binary(max_size=200), FUZZ_PATHS, st.sampled_from(ALL_FORMATS))
def test_random_bytes_raise_only_codec_error(data, path, fmt):
    decodes_or_rejects(data, path, fmt)


@given(cases(), st.data())
def test_mutated_encodings_raise_only_codec_error(case, data):
    node, path, schema = case
    fmt = data.draw(st.sampled_from(STRUCTURED))
    encoded = bytearray(encode(node, path, fmt))
    if not encoded:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        decode(bytes(encoded), path, fmt, schema)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.sampled_from(["/3/0/", "0", "7/1"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
SENML_LABELS = ["bn", "n", "v", "vs", "vb", "vd", "vlo", "bt", "t", "u", "bver", "x_", "e", "sv", "bv", "ov"]
senml_names = st.sampled_from(["/3/0/", "/3/0/0", "/3/", "0", "0/7", "7/0", "22/1", "/3/0/22/", "/3/1/7/", "", "x"])
senml_record_values = st.one_of(
    senml_names, st.integers(-(2**65), 2**65), st.floats(), st.booleans(), st.text(max_size=6), st.binary(max_size=6)
)
senml_records = st.lists(st.dictionaries(st.sampled_from(SENML_LABELS), senml_record_values, max_size=4), max_size=5)


@given(json_values, FUZZ_PATHS, st.sampled_from([SENML_JSON, LWM2M_JSON]))
def test_random_json_raises_only_codec_error(value, path, fmt):
    decodes_or_rejects(json.dumps(value).encode(), path, fmt)


@given(senml_records, FUZZ_PATHS)
def test_senml_shaped_json_raises_only_codec_error(records, path):
    records = [{k: (v.hex() if isinstance(v, bytes) else v) for k, v in r.items()} for r in records]
    decodes_or_rejects(json.dumps(records).encode(), path, SENML_JSON)
    decodes_or_rejects(json.dumps({"bn": "/3/0/", "e": records}).encode(), path, LWM2M_JSON)


CBOR_LABELS = {"bn": -2, "n": 0, "v": 2, "vs": 3, "vb": 4, "vd": 8, "bt": -3, "t": 6, "u": 1, "bver": -1}


@given(senml_records, FUZZ_PATHS)
def test_senml_shaped_cbor_raises_only_codec_error(records, path):
    records = [{CBOR_LABELS.get(k, k): v for k, v in r.items()} for r in records]
    decodes_or_rejects(cbor2.dumps(records), path, SENML_CBOR)


cbor_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64 - 1),
        st.floats(),
        st.text(max_size=6),
        st.binary(max_size=6),
        st.builds(cbor2.CBORTag, st.integers(0, 300), st.integers()),
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.integers(-8, 8) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(cbor_values, FUZZ_PATHS)
def test_random_cbor_raises_only_codec_error(value, path):
    decodes_or_rejects(cbor2.dumps(value), path, SENML_CBOR)


link_uris = st.text(alphabet="abc019/-._~:@!$&'()*+,;=", max_size=10)
link_attrs = st.dictionaries(
    st.text(alphabet="abcrt019!#$&+-.^_`|~", min_size=1, max_size=5),
    st.none()
    | st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)), max_size=8),
    max_size=3,
)


@given(st.lists(st.tuples(link_uris, link_attrs), max_size=4))
def test_link_format_round_trip(links):
    text = link_format(links)
    assert parse_link_format(text) == [(u, dict(a)) for u, a in links]
    assert link_format(parse_link_format(text)) == text


@given(st.one_of(st.text(max_size=60), st.text(alphabet='<>/;=",01ab \\rt', max_size=40)))
def test_random_link_text_raises_only_codec_error(text):
    try:
        links = parse_link_format(text)
    except CodecError:
        return
    assert parse_link_format(link_format(links)) == links


def test_float_edge_values_survive_every_format():
    for f in [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 1e16, 2.0**53, -2.5e-8, 65504.0, 65505.0]:
        node = Resource(3, FLT, f)
        for fmt in (TEXT, *STRUCTURED):
            got = decode(encode(node, "/6/0/3", fmt), "/6/0/3", fmt, SCHEMA).value
            assert got == f and math.copysign(1, got) == math.copysign(1, f), (f, fmt)
    assert struct.unpack(">e", struct.pack(">e", 65504.0))[0] == 65504.0  # the largest half float
