"""X.509 member identities (gridkey.crypto.identity) and the local CA (gridkey.crypto.ca)."""

import hashlib
import json
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given
from hypothesis import strategies as st

from gridkey.crypto import GK1, GK2, SeededRng
from gridkey.crypto.ca import CA_CERT_FILE, CA_KEY_FILE, REVOKED_FILE, LocalCA, cert_to_pem, load_certificate
from gridkey.crypto.identity import ID_RE, ROLES, CertificateError, Identity, verify_certificate
from gridkey.crypto.signatures import verify_key_from_cryptography

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create(now=NOW, rng=SeededRng("ca"))


@pytest.fixture(scope="module")
def meter(ca):
    return ca.issue_with_new_key("meter-1", "meter", GK2, now=NOW, rng=SeededRng("meter-1"))


def expect(check: str, *args, **kwargs) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        verify_certificate(*args, **kwargs)
    assert info.value.check == check, str(info.value)
    return info.value


def key_usage(**flags: bool) -> x509.KeyUsage:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment"]
    names += ["key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def forge(
    ca: LocalCA,
    *,
    cn: str = "meter-9",
    uris: tuple[str, ...] = ("urn:gridkey:meter:meter-9",),
    public_key=None,
    basic_ca: bool | None = False,
    ku: x509.KeyUsage | None = None,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    aki: x509.AuthorityKeyIdentifier | None = None,
) -> bytes:
    """A certificate signed with the CA key but built by hand, to break one profile rule at a time."""
    if public_key is None:
        public_key = GK2.generate_signing_key(SeededRng("forged")).public_key.to_cryptography()
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki or x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if uris:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    if basic_ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=basic_ca, path_length=None), critical=True)
    b = b.add_extension(ku or key_usage(digital_signature=True), critical=True)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    return b.sign(ca._key.to_cryptography(), hashes.SHA256()).public_bytes(Encoding.DER)


# --- the happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", [GK1, GK2], ids=lambda s: s.name)
@pytest.mark.parametrize("role", ROLES)
def test_issue_and_verify(ca, suite, role):
    member_id = f"{role}-7@site.example:01"
    key, cert = ca.issue_with_new_key(member_id, role, suite, now=NOW, rng=SeededRng(member_id + suite.name))
    der = cert.public_bytes(Encoding.DER)
    for encoded in (cert_to_pem(cert), der):
        ident = verify_certificate(encoded, ca.certificate, now=LATER, crl=ca.crl(now=NOW, days=31))
        assert isinstance(ident, Identity)
        assert (ident.member_id, ident.role) == (member_id, role)
        assert ident.key == key.public_key
        assert ident.key.scheme == suite.signature_scheme
        assert suite.accepts_key(ident.key)
        assert ident.kid == key.kid == ident.key.kid
        assert ident.serial == cert.serial_number
        assert ident.fingerprint == hashlib.sha256(der).hexdigest()
        assert ident.not_before == NOW
        assert ident.not_after == NOW + timedelta(days=825)
    sig = key.sign(b"hello")
    assert ident.key.verify(sig, b"hello")


def test_certificate_matches_profile(ca, meter):
    _, cert = meter
    exts = cert.extensions
    bc = exts.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = exts.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value == key_usage(digital_signature=True)
    san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:gridkey:meter:meter-1"]
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert exts.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    )
    assert cert.issuer == ca.certificate.subject


def test_ca_certificate_profile(ca):
    cert = ca.certificate
    assert cert.subject.rfc4514_string() == "CN=GridKey Local CA"
    assert cert.issuer == cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value == key_usage(key_cert_sign=True, crl_sign=True)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=3650)
    cert.verify_directly_issued_by(cert)
    assert "PRIVATE" not in repr(ca)


def test_ed25519_ca():
    ca = LocalCA.create("Ed CA", now=NOW, rng=SeededRng("ed-ca"), suite=GK1)
    assert isinstance(ca.certificate.public_key(), ed25519.Ed25519PublicKey)
    key, cert = ca.issue_with_new_key("gw", "gateway", GK2, now=NOW, rng=SeededRng("gw"))
    ident = verify_certificate(cert_to_pem(cert), ca.certificate, now=NOW, crl=ca.crl(now=NOW))
    assert ident.kid == key.kid and ident.role == "gateway"


def test_issue_signs_given_public_key(ca):
    key = GK1.generate_signing_key(SeededRng("external"))
    cert = ca.issue("ctl", "controller", key.public_key, now=NOW, days=10)
    ident = verify_certificate(cert_to_pem(cert), ca.certificate, now=NOW)
    assert ident.key == key.public_key and ident.not_after == NOW + timedelta(days=10)


def test_identity_feeds_key_directory(ca, meter):
    from gridkey.protocol.directory import KeyDirectory
    from gridkey.protocol.messages import RosterEntry

    key, cert = meter
    ident = verify_certificate(cert_to_pem(cert), ca.certificate, now=NOW)
    directory = KeyDirectory()
    directory.add(ident.member_id, ident.key, ident.role)
    assert directory.lookup(RosterEntry(ident.member_id, ident.kid)) == key.public_key


def test_profile_constants_match_protocol():
    from gridkey.protocol import directory, messages

    assert ROLES == directory.ROLES
    assert ID_RE.pattern == messages.ID_RE.pattern


def test_crypto_does_not_import_protocol():
    code = (
        "import sys, gridkey.crypto, gridkey.crypto.identity, gridkey.crypto.ca\n"
        "bad = [m for m in sys.modules if m.startswith('gridkey.protocol')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- time -------------------------------------------------------------------------------------


def test_validity_window(ca, meter):
    _, cert = meter
    pem = cert_to_pem(cert)
    verify_certificate(pem, ca.certificate, now=cert.not_valid_before_utc)  # bounds are inclusive
    verify_certificate(pem, ca.certificate, now=cert.not_valid_after_utc)
    expect("validity", pem, ca.certificate, now=cert.not_valid_after_utc + timedelta(seconds=1))
    expect("validity", pem, ca.certificate, now=cert.not_valid_before_utc - timedelta(seconds=1))
    # the same instant in another zone is the same instant
    verify_certificate(pem, ca.certificate, now=NOW.astimezone(timezone(timedelta(hours=-5))))


def test_naive_now_is_a_caller_error(ca, meter):
    with pytest.raises(ValueError, match="timezone-aware") as info:
        verify_certificate(cert_to_pem(meter[1]), ca.certificate, now=datetime(2025, 6, 2))
    assert not isinstance(info.value, CertificateError)


def test_issue_is_clamped_to_ca_validity():
    ca = LocalCA.create("Short CA", now=NOW, days=30)
    _, cert = ca.issue_with_new_key("m", "meter", GK2, now=NOW)
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc
    with pytest.raises(ValueError, match="not valid"):
        ca.issue_with_new_key("m", "meter", GK2, now=NOW + timedelta(days=31))
    with pytest.raises(ValueError, match="not valid"):
        ca.crl(now=NOW - timedelta(seconds=1))


# --- wrong issuer, tampering, wrong kind of certificate ----------------------------------------


def test_wrong_ca_rejected(meter):
    pem = cert_to_pem(meter[1])
    other_name = LocalCA.create("Other CA", now=NOW)
    expect("issuer", pem, other_name.certificate, now=NOW)
    same_name = LocalCA.create(now=NOW)  # same subject, different key
    expect("signature", pem, same_name.certificate, now=NOW)


def test_tampered_certificate_rejected(ca, meter):
    der = meter[1].public_bytes(Encoding.DER)
    assert der.count(b"meter-1") == 2  # CN and SAN
    renamed = der.replace(b"meter-1", b"meter-2")
    expect("signature", renamed, ca.certificate, now=NOW)
    i = der.index(b"meter-1")
    flipped = der[:i] + bytes([der[i] ^ 0x01]) + der[i + 1 :]
    expect("signature", flipped, ca.certificate, now=NOW)
    with pytest.raises(CertificateError):
        verify_certificate(der[:-1], ca.certificate, now=NOW)
    with pytest.raises(CertificateError):
        verify_certificate(der[:-1] + bytes([der[-1] ^ 0x80]), ca.certificate, now=NOW)


def _with_serial(der: bytes, serial: bytes) -> bytes:
    """``der`` with its serial INTEGER contents replaced (outer lengths fixed up; signature now stale)."""
    assert der[1] == der[5] == 0x82  # Certificate and TBSCertificate both use two-byte lengths
    i = der.index(b"\xa0\x03\x02\x01\x02\x02") + 6  # after version [0] v3 and the INTEGER tag
    n = der[i]
    out = bytearray(der[:i] + bytes([len(serial)]) + serial + der[i + 1 + n :])
    for at in (2, 6):
        out[at : at + 2] = (int.from_bytes(der[at : at + 2], "big") + len(serial) - n).to_bytes(2, "big")
    return bytes(out)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("serial", [b"\x00", b"\xff", b"\x80\x00\x00\x01"], ids=["zero", "minus1", "negative"])
def test_non_positive_serial_rejected(ca, meter, serial):
    der = meter[1].public_bytes(Encoding.DER)
    assert load_certificate(_with_serial(der, der[15 : 15 + der[14]])) == meter[1]  # the helper is exact
    with pytest.raises(CertificateError) as info:
        verify_certificate(_with_serial(der, serial), ca.certificate, now=NOW)
    assert info.value.check in ("serial", "parse")  # `cryptography` parses some, and will refuse all


def test_ca_certificate_is_not_a_member_identity(ca):
    expect("basic-constraints", cert_to_pem(ca.certificate), ca.certificate, now=NOW)


def test_leaf_is_not_a_trust_anchor(ca, meter):
    _, leaf_cert = meter
    expect("trust-anchor", cert_to_pem(leaf_cert), leaf_cert, now=NOW)


def test_forged_baseline_is_valid(ca):
    # the hand-built certificate passes when no rule is broken, so each failure below is attributable
    ident = verify_certificate(forge(ca), ca.certificate, now=NOW)
    assert (ident.member_id, ident.role) == ("meter-9", "meter")


@pytest.mark.parametrize(
    ("check", "kwargs"),
    [
        ("san", {"uris": ("urn:gridkey:meter:meter-8",)}),  # CN/SAN mismatch
        ("san", {"uris": ()}),
        ("san", {"uris": ("https://example.com/meter-9",)}),
        ("san", {"uris": ("urn:gridkey:meter:meter-9", "urn:gridkey:gateway:meter-9")}),
        ("san", {"uris": ("urn:gridkey:meter:meter-9", "URN:GRIDKEY:gateway:meter-9")}),
        ("san", {"uris": ("urn:gridkey:admin:meter-9",)}),
        ("san", {"uris": ("urn:gridkey:meter-9",)}),
        ("subject", {"cn": "-meter-9", "uris": ("urn:gridkey:meter:-meter-9",)}),
        ("basic-constraints", {"basic_ca": None}),
        ("basic-constraints", {"basic_ca": True}),
        ("key-usage", {"ku": key_usage(key_encipherment=True)}),
        ("key-usage", {"ku": key_usage(digital_signature=True, key_cert_sign=True)}),
        (
            "critical-extension",
            {"extra": ((x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True),)},
        ),
        ("authority-key-id", {"aki": x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None)}),
        ("key", {"public_key": ec.generate_private_key(ec.SECP384R1()).public_key()}),
    ],
)
def test_profile_violations_rejected(ca, check, kwargs):
    expect(check, forge(ca, **kwargs), ca.certificate, now=NOW)


def test_other_san_entries_are_ignored(ca):
    der = forge(ca, uris=("https://meter-9.example", "urn:gridkey:meter:meter-9"))
    assert verify_certificate(der, ca.certificate, now=NOW).member_id == "meter-9"


# --- revocation -------------------------------------------------------------------------------


def test_revoked_serial_rejected():
    ca = LocalCA.create(now=NOW)
    _, bad = ca.issue_with_new_key("m1", "meter", GK2, now=NOW)
    _, good = ca.issue_with_new_key("m2", "meter", GK1, now=NOW)
    rec = ca.revoke(bad.serial_number, now=NOW + timedelta(hours=1))
    assert ca.is_revoked(bad.serial_number) and not ca.is_revoked(good.serial_number)
    crl = ca.crl(now=NOW + timedelta(hours=2), days=31)
    entry = crl.get_revoked_certificate_by_serial_number(bad.serial_number)
    assert entry is not None and entry.revocation_date_utc == rec.revoked_at
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc == NOW + timedelta(hours=2, days=31)
    err = expect("revoked", cert_to_pem(bad), ca.certificate, now=LATER, crl=crl)
    assert format(bad.serial_number, "x") in str(err)
    verify_certificate(cert_to_pem(good), ca.certificate, now=LATER, crl=crl)
    # without a CRL the revocation is (by design) invisible to the verifier
    verify_certificate(cert_to_pem(bad), ca.certificate, now=LATER)


def test_revoke_details(ca):
    ca = LocalCA.create(now=NOW)
    first = ca.revoke(1234, now=NOW, reason="superseded")
    assert ca.revoke(1234, now=LATER) == first  # the first record stands
    ca.revoke(99, now=NOW, reason="unspecified")
    entry = ca.crl(now=NOW).get_revoked_certificate_by_serial_number(99)
    assert entry is not None and len(entry.extensions) == 0  # RFC 5280: omit reason "unspecified"
    for bad in ("compromised", "removeFromCRL"):
        with pytest.raises(ValueError):
            ca.revoke(5, now=NOW, reason=bad)
    with pytest.raises(ValueError):
        ca.revoke(0, now=NOW)
    assert [r.serial for r in ca.revocations] == [1234, 99]


def test_crl_numbers_increase(ca):
    numbers = [ca.crl(now=NOW).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for _ in range(3)]
    assert numbers == sorted(set(numbers))


def test_crl_from_another_ca_rejected(ca, meter):
    pem = cert_to_pem(meter[1])
    same_name = LocalCA.create(now=NOW)
    expect("crl-signature", pem, ca.certificate, now=NOW, crl=same_name.crl(now=NOW))
    other_name = LocalCA.create("Other CA", now=NOW)
    expect("crl-issuer", pem, ca.certificate, now=NOW, crl=other_name.crl(now=NOW))


def test_expired_crl_rejected(ca, meter):
    pem = cert_to_pem(meter[1])
    crl = ca.crl(now=NOW, days=7)
    verify_certificate(pem, ca.certificate, now=NOW + timedelta(days=7), crl=crl)
    expect("crl-expired", pem, ca.certificate, now=NOW + timedelta(days=7, seconds=1), crl=crl)


def test_crl_with_critical_extension_rejected(ca, meter):
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)
        .sign(ca._key.to_cryptography(), hashes.SHA256())
    )
    expect("crl-extension", cert_to_pem(meter[1]), ca.certificate, now=NOW, crl=crl)


# --- storage ----------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    ca = LocalCA.create("Depot CA", now=NOW, rng=SeededRng("depot"))
    _, revoked = ca.issue_with_new_key("m1", "meter", GK2, now=NOW)
    ca.revoke(revoked.serial_number, now=NOW, reason="cessationOfOperation")
    ca.save(tmp_path / "ca")

    d = tmp_path / "ca"
    assert stat.S_IMODE((d / CA_KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in d.iterdir()) == sorted([CA_KEY_FILE, CA_CERT_FILE, REVOKED_FILE])
    records = json.loads((d / REVOKED_FILE).read_text())
    assert records == [
        {
            "serial": format(revoked.serial_number, "x"),
            "revoked_at": NOW.isoformat(),
            "reason": "cessationOfOperation",
        }
    ]

    loaded = LocalCA.load(d)
    assert loaded.certificate == ca.certificate
    assert loaded.public_key == ca.public_key
    assert loaded.revocations == ca.revocations
    assert loaded.is_revoked(revoked.serial_number)
    key, cert = loaded.issue_with_new_key("m2", "meter", GK1, now=NOW)
    crl = loaded.crl(now=NOW)
    assert verify_certificate(cert_to_pem(cert), ca.certificate, now=NOW, crl=crl).kid == key.kid
    expect("revoked", cert_to_pem(revoked), ca.certificate, now=NOW, crl=crl)

    # saving again over an existing directory keeps the key private
    (d / CA_KEY_FILE).chmod(0o644)
    loaded.save(d)
    assert stat.S_IMODE((d / CA_KEY_FILE).stat().st_mode) == 0o600


def test_save_load_with_password(tmp_path):
    ca = LocalCA.create(now=NOW)
    ca.save(tmp_path, password=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / CA_KEY_FILE).read_bytes()
    assert LocalCA.load(tmp_path, password=b"correct horse").public_key == ca.public_key
    with pytest.raises((ValueError, TypeError)):
        LocalCA.load(tmp_path)
    with pytest.raises(ValueError):
        LocalCA.load(tmp_path, password=b"wrong")


def test_load_rejects_mismatched_key(tmp_path):
    a, b = LocalCA.create(now=NOW), LocalCA.create(now=NOW)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    (tmp_path / "a" / CA_CERT_FILE).write_bytes((tmp_path / "b" / CA_CERT_FILE).read_bytes())
    with pytest.raises(ValueError, match="does not match"):
        LocalCA.load(tmp_path / "a")


# --- input validation and malformed bytes -----------------------------------------------------


def test_issue_validates_inputs(ca):
    key = GK2.generate_signing_key(SeededRng("v")).public_key
    for member_id in ("", "-x", "a" * 65, "a b"):
        with pytest.raises(ValueError):
            ca.issue(member_id, "meter", key, now=NOW)
    with pytest.raises(ValueError):
        ca.issue("m", "admin", key, now=NOW)
    with pytest.raises(TypeError):
        ca.issue("m", "meter", key.to_cryptography(), now=NOW)
    ca.issue("a" * 64, "meter", key, now=NOW)  # the longest member id still fits a CN


def test_load_certificate(meter):
    cert = meter[1]
    assert load_certificate(cert_to_pem(cert)) == cert
    assert load_certificate(cert.public_bytes(Encoding.DER)) == cert
    assert verify_key_from_cryptography(load_certificate(cert_to_pem(cert)).public_key()) == meter[0].public_key
    for junk in (
        b"",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x02\x01\x01",
    ):
        with pytest.raises(CertificateError) as info:
            load_certificate(junk)
        assert info.value.check == "parse"


def test_certificate_error_shape():
    err = CertificateError("validity", "expired")
    assert isinstance(err, ValueError) and str(err) == "validity: expired" and err.check == "validity"


@given(st.binary(max_size=600))
def test_random_bytes_only_raise_certificate_error(data):
    ca = _CA_FOR_FUZZ
    with pytest.raises(CertificateError):
        verify_certificate(data, ca.certificate, now=NOW)


@given(st.data())
def test_mutated_certificates_only_raise_certificate_error(data):
    ca, pems = _CA_FOR_FUZZ, _CERTS_FOR_FUZZ
    original = data.draw(st.sampled_from(pems))
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            buf[i] ^= data.draw(st.integers(1, 255))
        elif op == "delete":
            del buf[i]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        ident = verify_certificate(bytes(buf), ca.certificate, now=NOW, crl=_CRL_FOR_FUZZ)
    except CertificateError:
        return
    # PEM whitespace or armour edits can leave the DER intact; then it is the same certificate
    assert ident.fingerprint == hashlib.sha256(load_certificate(original).public_bytes(Encoding.DER)).hexdigest()


_CA_FOR_FUZZ = LocalCA.create(now=NOW, rng=SeededRng("fuzz-ca"))
_CERTS_FOR_FUZZ = [
    fmt(_CA_FOR_FUZZ.issue_with_new_key("fz", "meter", suite, now=NOW, rng=SeededRng(suite.name))[1])
    for suite in (GK1, GK2)
    for fmt in (cert_to_pem, lambda c: c.public_bytes(Encoding.DER))
]
_CRL_FOR_FUZZ = _CA_FOR_FUZZ.crl(now=NOW)
