"""Message codecs, the COSE_Sign1 profile, and interoperability with an independent COSE library."""

import contextlib

import cbor2
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cwt import COSE, COSEKey
from hypothesis import given
from hypothesis import strategies as st

from gridkey.crypto import GK1, GK2, SeededRng
from gridkey.crypto.groups import P256_GROUP
from gridkey.protocol import cose
from gridkey.protocol.errors import DecodeError
from gridkey.protocol.messages import (
    MEMBER_MSG_MAX,
    Abort,
    Bundle,
    Commit,
    Confirm,
    Mode,
    RosterEntry,
    Round1,
    Round2,
    Start,
    decode,
)

RNG = SeededRng("messages")
KEYS = {s.name: s.generate_signing_key(RNG) for s in (GK1, GK2)}
SID = bytes(range(16))


def samples():
    roster = tuple(RosterEntry(f"m{i}", bytes([i]) * 8) for i in range(3))
    return [
        Start(SID, 7, "grp-1", "GK1", roster, Mode.E2E, b"n" * 16, 1000, 2000, 0),
        Round1(SID, 7, 2, b"z" * 32),
        Round2(SID, 7, 0, b"x" * 33),
        Confirm(SID, 7, 1, b"k" * 8, b"t" * 16),
        Bundle(SID, 7, 1, (b"a" * 10, b"b" * 10)),
        Commit(SID, 7, b"k" * 8, b"t" * 16),
        Abort(SID, 7, "timeout", ("m1",)),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("suite", ["GK1", "GK2"])
def test_round_trip(msg, suite):
    key = KEYS[suite]
    data = msg.sign(key, b"aad")
    env = decode(data)
    assert env.msg == msg
    assert env.cose.kid == key.kid
    assert env.cose.verify(key.public_key, b"aad")
    assert not env.cose.verify(key.public_key, b"other aad")


@pytest.mark.parametrize("suite", ["GK1", "GK2"])
def test_cwt_verifies_ours_and_we_verify_cwts(suite):
    key = KEYS[suite]
    payload = Round1(SID, 1, 0, b"z" * 32).to_payload()
    ours = cose.sign1(payload, key, external_aad=b"ctx")
    pem = key.public_key.to_cryptography().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    pub = COSEKey.from_pem(pem, kid=key.kid)
    ctx = COSE.new()
    assert ctx.decode(ours, pub, external_aad=b"ctx") == payload
    priv = COSEKey.from_pem(key.to_pem(), kid=key.kid)
    theirs = COSE.new(alg_auto_inclusion=True, kid_auto_inclusion=True, deterministic_header=True).encode_and_sign(
        payload, priv, external_aad=b"ctx"
    )
    parsed = cose.parse_sign1(theirs, max_size=1000)
    assert parsed.payload == payload
    if suite == "GK2":
        # python-cwt signs ECDSA with whatever s OpenSSL returns; GK2 accepts low-S only, so an
        # implementation built on such a library normalises s (one line: s = min(s, n - s)).
        n = P256_GROUP.order
        r, s_ = parsed.signature[:32], int.from_bytes(parsed.signature[32:], "big")
        if s_ > n // 2:
            assert not parsed.verify(key.public_key, b"ctx"), "a high-S signature verified"
            parsed = cose.Sign1(parsed.protected, parsed.alg, parsed.kid, payload, r + (n - s_).to_bytes(32, "big"))
    assert parsed.verify(key.public_key, b"ctx")


def test_signature_structure_matches_rfc9052():
    key = KEYS["GK1"]
    data = cose.sign1(b"payload", key, b"aad")
    tag = cbor2.loads(data)
    assert tag.tag == 18
    protected, unprotected, payload, sig = tag.value
    assert cbor2.loads(protected) == {1: -8}
    assert unprotected == {4: key.kid}
    tbs = cbor2.dumps(["Signature1", protected, b"aad", payload])
    assert key.public_key.verify(sig, tbs)


@pytest.mark.parametrize(
    "bad",
    [
        lambda m: m[:-1],  # truncated
        lambda m: m + b"\x00",  # trailing
        lambda m: m.replace(b"\xd2\x84", b"\xd2\x9f", 1),  # indefinite array
        lambda m: b"\xd1" + m[1:],  # wrong tag
        lambda m: m[1:],  # untagged
        lambda m: m.replace(b"\xa1\x04\x48", b"\xa2\x04\x48", 1),  # header map length
    ],
)
def test_envelope_rejections(bad):
    data = Round1(SID, 1, 0, b"z" * 32).sign(KEYS["GK1"])
    with pytest.raises(DecodeError):
        decode(bad(data))


def test_payload_rejections():
    key = KEYS["GK1"]
    good = {1: 2, 2: SID, 3: 1, 4: 0, 5: b"z" * 32}
    cases = [
        {**good, 6: 1},  # unknown field
        {k: v for k, v in good.items() if k != 5},  # missing field
        {**good, 3: -1},  # negative epoch
        {**good, 4: True},  # bool for int
        {**good, 2: SID[:15]},  # short sid
        {**good, 1: 99},  # unknown type
        {**good, 5: "z" * 32},  # text for bytes
    ]
    for payload in cases:
        with pytest.raises(DecodeError):
            decode(cose.sign1(cbor2.dumps(payload, canonical=True), key))
    # non-canonical payload (epoch in two bytes)
    raw = cbor2.dumps(good, canonical=True).replace(b"\x03\x01", b"\x03\x18\x01", 1)
    with pytest.raises(DecodeError):
        decode(cose.sign1(raw, key))


def test_member_messages_over_200_bytes_are_rejected():
    key = KEYS["GK1"]
    big = Round1(SID, 1, 0, b"z" * 120).sign(key)
    assert len(big) > MEMBER_MSG_MAX
    with pytest.raises(DecodeError):
        decode(big)


def test_start_validation():
    roster = (RosterEntry("b", b"1" * 8), RosterEntry("a", b"2" * 8))
    with pytest.raises(DecodeError):
        Start(SID, 1, "g", "GK1", roster, Mode.E2E, b"n" * 16, 1, 2, 0)  # unsorted
    with pytest.raises(DecodeError):
        Start(SID, 1, "g", "GK1", roster[:1], Mode.E2E, b"n" * 16, 1, 2, 0)  # n < 2
    dup = (RosterEntry("a", b"1" * 8), RosterEntry("b", b"1" * 8))
    with pytest.raises(DecodeError):
        Start(SID, 1, "g", "GK1", dup, Mode.E2E, b"n" * 16, 1, 2, 0)  # duplicate kid
    with pytest.raises(DecodeError):
        Start(SID, 1, "bad id!", "GK1", dup[:1] * 2, Mode.E2E, b"n" * 16, 1, 2, 0)


valid = st.sampled_from([m.sign(KEYS[s]) for m in samples() for s in ("GK1", "GK2")])


@given(st.binary(max_size=400))
def test_decode_random_bytes(data):
    with contextlib.suppress(DecodeError):
        decode(data)


@given(valid, st.data())
def test_decode_mutated_messages(data, draw):
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[i] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = draw.draw(st.binary(min_size=1, max_size=4))
    with contextlib.suppress(DecodeError):
        decode(bytes(buf))
