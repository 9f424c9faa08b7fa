"""The strict deterministic-CBOR decoder."""

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridkey.protocol import cbor
from gridkey.protocol.errors import DecodeError

# Values GridKey may legitimately encode: ints, byte/text strings, bools, null, arrays, small-int-keyed maps
scalars = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.integers(min_value=0, max_value=23), inner, max_size=5),
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip_of_deterministic_encodings(value):
    data = cbor.dumps(value)
    assert cbor.loads(data, max_size=10_000) == value


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data):
    try:
        value = cbor.loads(data, max_size=10_000)
    except DecodeError:
        return
    assert cbor.dumps(value) == data  # anything accepted is in deterministic form


@given(values, st.data())
def test_mutations_raise_only_decode_error(value, data):
    encoded = bytearray(cbor.dumps(value))
    i = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[i] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = cbor.loads(bytes(encoded), max_size=10_000)
    except DecodeError:
        return
    assert cbor.dumps(decoded) == bytes(encoded)


@pytest.mark.parametrize(
    "hexdata,why",
    [
        ("1817", "integer 23 in two bytes"),
        ("190017", "integer 23 in three bytes"),
        ("5803616263", "short string with a 1-byte length"),
        ("9f01ff", "indefinite-length array"),
        ("5f4101ff", "indefinite-length byte string"),
        ("a201010101", "duplicate map key"),
        ("a202010101", "map keys out of order"),
        ("f93c00", "half float"),
        ("fb3ff0000000000000", "double"),
        ("f7", "undefined"),
        ("c11a5f5e1000", "datetime tag"),
        ("c249010000000000000000", "bignum tag"),
        ("d8235f", "regex tag"),
        ("0102", "trailing bytes"),
        ("", "empty"),
        ("62c328", "invalid UTF-8"),
        ("9b00000000ffffffff", "array claiming 4 billion items"),
        ("5b00000000ffffffff", "string claiming 4 GB"),
        ("a1818101", "array as map key"),
        ("818181818181818181818101", "nesting deeper than the limit"),
        ("a20105f507", "{1: 5, true: 7}: true would alias 1"),
        ("a1f400", "{false: 0}: false would alias 0"),
        ("a1f600", "null as a map key"),
        ("a1616101", "text as a map key"),
        ("a1416101", "bytes as a map key"),
    ],
)
def test_rejects(hexdata, why):
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex(hexdata), max_size=10_000)


def test_size_limit_and_allowed_tags():
    with pytest.raises(DecodeError):
        cbor.loads(cbor.dumps(b"x" * 100), max_size=50)
    tagged = cbor2.dumps(cbor2.CBORTag(18, [1]))
    with pytest.raises(DecodeError):
        cbor.loads(tagged, max_size=100)
    assert cbor.loads(tagged, max_size=100, allowed_tags=frozenset({18})).value == [1]


FLAT = ((1, int), (2, bytes), (3, str))


@given(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=300), st.text(max_size=30))
def test_flat_map_reader_matches_cbor2(a, b, c):
    data = cbor.dumps({1: a, 2: b, 3: c})
    assert cbor.read_flat_map(data, FLAT) == [a, b, c]


@given(st.binary(max_size=80))
def test_flat_map_reader_random_bytes(data):
    try:
        values = cbor.read_flat_map(data, FLAT)
    except DecodeError:
        return
    assert cbor.dumps(dict(zip((1, 2, 3), values, strict=True))) == data


@pytest.mark.parametrize(
    "obj",
    [
        {1: 1, 2: b""},
        {1: 1, 2: b"", 3: "x", 4: 0},
        {1: 1, 3: "x", 2: b""},
        {1: -1, 2: b"", 3: "x"},
        {1: 1, 2: "s", 3: "x"},
    ],
)
def test_flat_map_reader_rejects_wrong_shapes(obj):
    with pytest.raises(DecodeError):
        cbor.read_flat_map(cbor2.dumps(obj), FLAT)  # not canonical=True on purpose for the reordered map


def test_check_fields():
    assert cbor.check_fields({1: 2}, {1: int}) == {1: 2}
    for bad in ({1: True}, {1: -1}, {1: "2"}, {2: 1}, {1: 1, 2: 2}, [1]):
        with pytest.raises(DecodeError):
            cbor.check_fields(bad, {1: int})


@given(
    st.dictionaries(st.integers(min_value=0, max_value=23), scalars, max_size=4),
    st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.binary(max_size=3)),
    scalars,
)
def test_any_non_integer_map_key_is_rejected(m, key, value):
    """Python's ``True == 1`` would merge a boolean key into an integer one; only integers are keys."""
    # by hand: a Python dict would merge True into 1 before encoding
    pairs = sorted([(cbor.dumps(k), cbor.dumps(v)) for k, v in m.items()] + [(cbor.dumps(key), cbor.dumps(value))])
    data = bytes([0xA0 | len(pairs)]) + b"".join(k + v for k, v in pairs)
    with pytest.raises(DecodeError):
        cbor.loads(data, max_size=10_000)


def test_check_fields_refuses_boolean_keys_even_from_a_dict():
    with pytest.raises(DecodeError):
        cbor.check_fields({True: 5}, {1: int})


def test_a_request_saying_enroll_cannot_be_read_as_rejoin():
    """{1: "enroll", 2: "m-1", 3: 0, true: "rejoin"}: cbor2 alone returns {1: "rejoin", ...}."""
    data = b"\xa4\x01" + cbor2.dumps("enroll") + b"\x02" + cbor2.dumps("m-1") + b"\x03\x00\xf5" + cbor2.dumps("rejoin")
    assert cbor2.loads(data)[1] == "rejoin"  # the aliasing this guards against
    with pytest.raises(DecodeError, match="integers"):
        cbor.loads(data, max_size=10_000)
