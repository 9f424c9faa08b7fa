"""Group arithmetic and strict element/scalar decoding for both suites."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridkey.crypto import GK1, GK2, InvalidElement, InvalidScalar, SeededRng
from gridkey.crypto.groups import P256_GROUP, RISTRETTO255

GROUPS = [RISTRETTO255, P256_GROUP]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_arithmetic_is_a_group(group):
    rng = SeededRng(1)
    a, b = group.random_scalar(rng), group.random_scalar(rng)
    pa, pb = group.base_mult(a), group.base_mult(b)
    assert group.equal(group.add(pa, pb), group.base_mult((a + b) % group.order))
    assert group.equal(group.sub(pa, pb), group.base_mult((a - b) % group.order))
    assert group.equal(group.mult(b, pa), group.base_mult(a * b % group.order))
    assert group.is_identity(group.sub(pa, pa))
    assert group.encode(group.sub(pa, pa)) == group.identity_encoding


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_encode_decode_round_trip(group):
    rng = SeededRng(2)
    for _ in range(20):
        p = group.base_mult(group.random_scalar(rng))
        enc = group.encode(p)
        assert len(enc) == group.element_len
        assert group.encode(group.decode(enc)) == enc


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_rejects_identity_and_wrong_lengths(group):
    with pytest.raises(InvalidElement):
        group.decode(group.identity_encoding)
    with pytest.raises(InvalidElement):
        group.decode(bytes(group.element_len))
    for n in (0, 1, group.element_len - 1, group.element_len + 1):
        with pytest.raises(InvalidElement):
            group.decode(b"\x02" * n)


def test_ristretto_rejects_non_canonical():
    # 2^255 - 19 + 1 > p: the field element is not reduced, so the encoding is not canonical.
    non_canonical = (2**255 - 18).to_bytes(32, "little")
    with pytest.raises(InvalidElement):
        RISTRETTO255.decode(non_canonical)
    # a negative field element (lowest bit set) is never a valid ristretto255 encoding
    with pytest.raises(InvalidElement):
        RISTRETTO255.decode(b"\x01" + bytes(31))


RFC9496_BAD = [
    line
    for line in (Path(__file__).parent / "data" / "rfc9496-bad-encodings.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


@pytest.mark.parametrize("hexdata", RFC9496_BAD)
def test_ristretto_rejects_every_rfc9496_bad_encoding(hexdata):
    with pytest.raises(InvalidElement):
        RISTRETTO255.decode(bytes.fromhex(hexdata))


def test_ristretto_rejects_the_identity_with_bit_255_set():
    with pytest.raises(InvalidElement):
        RISTRETTO255.decode(bytes(31) + b"\x80")


@given(st.integers(min_value=1, max_value=RISTRETTO255.order - 1))
def test_ristretto_rejects_bit_255_aliases(s):
    enc = RISTRETTO255.encode(RISTRETTO255.base_mult(s))
    assert RISTRETTO255.decode(enc) == enc
    with pytest.raises(InvalidElement):
        RISTRETTO255.decode(enc[:31] + bytes([enc[31] | 0x80]))


@given(st.integers(min_value=1, max_value=P256_GROUP.order - 1), st.sampled_from([0, 1, 4, 5, 6, 7, 0xFF]))
def test_p256_accepts_only_the_compressed_form_of_a_point(s, prefix):
    """SEC1 edge cases: the other prefixes (identity, uncompressed, hybrid, garbage) never decode, and a
    valid point flipped to the other y parity is the negated point, a different element."""
    g = P256_GROUP
    enc = g.encode(g.base_mult(s))
    assert g.encode(g.decode(enc)) == enc
    with pytest.raises(InvalidElement):
        g.decode(bytes([prefix]) + enc[1:])
    flipped = bytes([enc[0] ^ 1]) + enc[1:]
    assert g.encode(g.decode(flipped)) == flipped != enc


def test_p256_rejects_x_at_or_above_p_and_the_infinity_byte():
    g = P256_GROUP
    for x in (g.p, g.p + 1, 2**256 - 1):
        with pytest.raises(InvalidElement):
            g.decode(b"\x03" + x.to_bytes(32, "big"))
    for data in (b"\x00", b"\x00" * 33, b"\x02" + bytes(31)):
        with pytest.raises(InvalidElement):
            g.decode(data)


def test_p256_rejects_off_curve_uncompressed_and_unreduced():
    g = P256_GROUP
    enc = g.encode(g.base_mult(5))
    with pytest.raises(InvalidElement):  # x = p is not a field element
        g.decode(b"\x02" + g.p.to_bytes(32, "big"))
    with pytest.raises(InvalidElement):  # uncompressed points are not the canonical encoding
        g.decode(b"\x04" + bytes(64))
    # find an x with no point on the curve
    for x in range(1, 50):
        try:
            g.decode(b"\x02" + x.to_bytes(32, "big"))
        except InvalidElement:
            break
    else:
        pytest.fail("expected some small x to be off the curve")
    assert g.decode(enc) is not None


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
@given(data=st.binary(min_size=0, max_size=40))
def test_decode_only_raises_invalid_element(group, data):
    try:
        p = group.decode(data)
    except InvalidElement:
        return
    assert group.encode(p) == data  # whatever is accepted is canonical


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_scalars(group):
    with pytest.raises(InvalidScalar):
        group.scalar_decode(bytes(group.scalar_len))
    with pytest.raises(InvalidScalar):
        group.scalar_decode(group.order.to_bytes(32, "big" if group is P256_GROUP else "little"))
    with pytest.raises(InvalidScalar):
        group.base_mult(0)
    s = group.random_scalar(SeededRng(3))
    assert group.scalar_decode(group.scalar_encode(s)) == s


def test_suites_know_their_signatures():
    rng = SeededRng(4)
    for suite in (GK1, GK2):
        key = suite.generate_signing_key(rng)
        assert suite.accepts_key(key.public_key)
        sig = key.sign(b"hello")
        assert len(sig) == 64
        assert key.public_key.verify(sig, b"hello")
        assert not key.public_key.verify(sig, b"hellO")
        assert not key.public_key.verify(sig[:-1] + bytes([sig[-1] ^ 1]), b"hello")
        assert not key.public_key.verify(b"", b"hello")
        assert len(key.kid) == 8
        assert "PRIVATE" not in repr(key)
    assert not GK1.accepts_key(GK2.generate_signing_key(rng).public_key)


@given(st.binary(max_size=64))
def test_ecdsa_signatures_are_low_s_and_high_s_is_refused(msg):
    """GK2: (r, n - s) is a second valid ECDSA signature on the same message; only low-S verifies."""
    from gridkey.crypto.signatures import P256SigningKey

    n = P256_GROUP.order
    key = P256SigningKey.generate(SeededRng(b"low-s"))
    sig = key.sign(msg)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    assert s <= n // 2 and key.public_key.verify(sig, msg)
    high = r.to_bytes(32, "big") + (n - s).to_bytes(32, "big")
    assert not key.public_key.verify(high, msg)
