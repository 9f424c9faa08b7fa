"""Baseline group-key schemes for honest benchmark comparison with GridKey (bench only).

Neither scheme is contributory: in both, a **key server** picks the group key and therefore knows
it. That is the point of the comparison. GridKey's coordinator only relays and never learns the
key; these baselines show what that property costs in bytes and CPU compared with letting a
trusted server distribute keys.

Both run in one process, like :mod:`gridkey.protocol.loopback`. They use the same framing as the
protocol, so byte counts compare fairly: every message is a COSE_Sign1
(:func:`gridkey.protocol.cose.sign1`) over a deterministic CBOR map with small integer keys, a
16-byte sid and an epoch. The members' key confirmation is the protocol's own ``Confirm`` message
(type 4), built and decoded with :mod:`gridkey.protocol.messages`.

**Centralized key transport** (:func:`run_centralized`). What it trusts: the key server picks the
key and sees it. Members trust it to pick a fresh, random key and to send it only to members. Each
member has a static KEM key pair (X25519 for GK1, P-256 for GK2), provisioned in advance and not
counted. The server picks a fresh 16-byte group key and HPKE-encrypts it (RFC 9180 base mode,
KEM/HKDF-SHA-256/AES-128-GCM) to each member in turn. Each member gets one unicast message signed
by the server. The member verifies one signature, decrypts, and answers with a signed Confirm. The
server verifies all n confirmations. That makes 2 rounds.

**LKH** (:func:`run_lkh`; RFC 2627 logical key hierarchy, binary tree). What it trusts: the key
server holds every key in the tree, so it knows every group key past and future. Members trust it
to rekey honestly when someone leaves. The tree is a full binary tree in heap layout. The root is
node 1, node v has children 2v and 2v+1, and member i sits at leaf n+i (nodes 1..n-1 are internal,
n..2n-1 are leaves). Leaf keys are shared with each member in advance, and each member holds the
keys on its leaf-to-root path. That setup is not counted. The benchmark measures one rekey when
the member at the last leaf (2n-1) leaves. The server makes a fresh key for every ancestor of that
leaf. It wraps each new key under the keys of the node's children that remain: on the path, the
child's *new* key; off the path, its current key. All wrapped keys go in one signed multicast
message. Each remaining member verifies one signature and unwraps only the keys on its own path
(at most ceil(log2 n) AES-GCM decryptions), ending with the new root key. It then sends a signed
Confirm, and the server verifies them. That makes 2 rounds.

Wrap count for a leave: a leaf at depth d (edges to the root) has d ancestors. The lowest one
keeps a single child (the leaver's sibling), so it gets one wrap. Each of the other d-1 ancestors
gets two. Total **2d - 1**. The last leaf is always on the deepest level, at depth
d = ceil(log2 n), so the measured rekey has exactly ``2*ceil(log2 n) - 1`` wraps
(:func:`lkh_leave_wrap_count`). This baseline keeps the parent with its single child rather than
collapsing it into the sibling. Collapsing would save one wrap but change the tree's shape.

Wire formats (payload maps; every message is COSE_Sign1 with the protocol's header profile)::

    KeyTransport  type 16  server -> member   {1: 16, 2: sid, 3: epoch, 4: idx, 5: hpke enc||ct}
    LkhRekey      type 17  server -> members  {1: 17, 2: sid, 3: epoch, 4: [wrap, ...]}
                           wrap = [node, child, nonce(12), AES-128-GCM(child key, new key)(32)]
    Confirm       type 4   member -> server   {1: 4, 2: sid, 3: epoch, 4: idx, 5: key_id, 6: tag}

Each wrap is a 4-element CBOR array, not an int-keyed map: that saves 4 bytes per wrap and does
not inflate the baseline. AEAD associated data binds every ciphertext to its context. HPKE
``info`` is CBOR ``["GridKey v1 key transport", sid, epoch, idx]``, and the wrap AAD is
``["GridKey v1 lkh wrap", sid, epoch, node, child]``.

Key schedule (the same in both schemes; K is the 16-byte group key)::

    PRK     = HKDF-Extract(salt = sid, IKM = K)
    key_id  = HKDF-Expand(PRK, "GridKey v1 key id", 8)
    ck      = HKDF-Expand(PRK, "GridKey v1 confirm", 32)
    tag     = HMAC-SHA-256(ck, sid)[:16]

Accounting (:class:`BaselineResult`). ``total_bytes`` counts unicast messages once, and counts a
multicast once per intended recipient (the n-1 remaining members for LKH). CPU time uses
``time.process_time_ns`` around each party's own work, as in loopback. Provisioning (identity
keys, KEM keys, the initial LKH tree) is outside the timed regions. Randomness comes from a
:class:`~gridkey.crypto.rng.SeededRng`, so runs are reproducible. HPKE's ephemeral keys are the
one exception: ``cryptography`` draws them from the OS.
"""

from __future__ import annotations

import hmac
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..crypto.groups import Rng
from ..crypto.rng import SeededRng
from ..crypto.signatures import P256SigningKey, SigningKey, VerifyKey
from ..crypto.suite import AEAD_KEY_LEN, AEAD_NONCE_LEN, AEAD_TAG_LEN, Suite, get_suite
from ..protocol import cbor
from ..protocol.cose import parse_sign1, sign1
from ..protocol.errors import DecodeError, ProtocolError
from ..protocol.messages import KEY_ID_LEN, MAX_MSG_SIZE, SID_LEN, TAG_LEN, Confirm, decode

TYPE_KEY_TRANSPORT = 16  # bench-only message types, outside the protocol's 1..7
TYPE_LKH_REKEY = 17
GROUP_KEY_LEN = AEAD_KEY_LEN  # 16: an AES-128 key, in both schemes and at every LKH node
KEY_ID_LABEL = b"GridKey v1 key id"
CONFIRM_LABEL = b"GridKey v1 confirm"
KEY_TRANSPORT_MSG_MAX = 512
LKH_WRAP_CT_LEN = GROUP_KEY_LEN + AEAD_TAG_LEN
ROOT = 1

KemPrivateKey = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
KemPublicKey = x25519.X25519PublicKey | ec.EllipticCurvePublicKey


class Rejected(ProtocolError):
    """A party refused a baseline message (malformed, bad signature, wrong context, or bad ciphertext)."""


@dataclass(frozen=True)
class BaselineResult:
    scheme: str  # "centralized" | "lkh"
    suite: str
    n: int  # group size; for LKH, the size before the leave (n-1 members end with the new key)
    agree: bool  # every (remaining) member holds exactly the key and key id the server intended
    member_msg_bytes_max: int  # largest message a member sends (its Confirm)
    member_cpu_ms: float  # median over members of each member's own CPU time
    coordinator_cpu_ms: float  # key server's CPU time (distribution/rekey + checking confirmations)
    total_bytes: int  # unicast once, multicast once per recipient
    rounds: int
    coordinator_msg_bytes_max: int = 0  # largest message the server sends (one copy)


# --- shared pieces ------------------------------------------------------------------------------


def _as_suite(suite: Suite | str) -> Suite:
    return get_suite(suite) if isinstance(suite, str) else suite


def key_schedule(suite: Suite, group_key: bytes, sid: bytes) -> tuple[bytes, bytes]:
    """(key id, confirm key) for a group key in session ``sid``."""
    prk = suite.hkdf_extract(sid, group_key)
    return suite.hkdf_expand(prk, KEY_ID_LABEL, KEY_ID_LEN), suite.hkdf_expand(prk, CONFIRM_LABEL, 32)


def _tag(suite: Suite, confirm_key: bytes, sid: bytes) -> bytes:
    return suite.mac(confirm_key, sid)[:TAG_LEN]


def _new_sid(suite: Suite, rng: Rng, scheme: str, epoch: int) -> bytes:
    return suite.hash(cbor.dumps(["GridKey v1 baseline sid", scheme, suite.name, epoch, rng(16)]))[:SID_LEN]


def _confirm(suite: Suite, key: SigningKey, sid: bytes, epoch: int, idx: int, group_key: bytes) -> bytes:
    key_id, confirm_key = key_schedule(suite, group_key, sid)
    return Confirm(sid=sid, epoch=epoch, idx=idx, key_id=key_id, tag=_tag(suite, confirm_key, sid)).sign(key)


def _accept_confirm(
    suite: Suite,
    data: bytes,
    verify_keys: dict[int, VerifyKey],
    sid: bytes,
    epoch: int,
    key_id: bytes,
    confirm_key: bytes,
) -> int | None:
    """The index of the member whose valid Confirm ``data`` is, or None."""
    try:
        env = decode(data)
    except DecodeError:
        return None
    msg = env.msg
    if not isinstance(msg, Confirm) or msg.sid != sid or msg.epoch != epoch:
        return None
    vk = verify_keys.get(msg.idx)
    if vk is None or not env.cose.verify(vk):
        return None
    if msg.key_id != key_id or not hmac.compare_digest(msg.tag, _tag(suite, confirm_key, sid)):
        return None
    return msg.idx


def _verified_payload(data: bytes, server_key: VerifyKey, max_size: int) -> bytes:
    try:
        s1 = parse_sign1(data, max_size=max_size)
    except DecodeError as exc:
        raise Rejected(f"malformed: {exc}") from None
    if not s1.verify(server_key):
        raise Rejected("bad signature")
    return s1.payload


# --- centralized key transport (HPKE) -----------------------------------------------------------


_KEMS = {"GK1": hpke.KEM.X25519, "GK2": hpke.KEM.P256}


def hpke_suite(suite: Suite) -> hpke.Suite:
    return hpke.Suite(_KEMS[suite.name], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def hpke_kem_enc_len(suite: Suite) -> int:
    """Length of the KEM encapsulation that prefixes an HPKE ciphertext (32 for X25519, 65 for P-256)."""
    return _KEMS[suite.name].enc_length()


def kem_keygen(suite: Suite, rng: Rng) -> KemPrivateKey:
    if suite.name == "GK1":
        return x25519.X25519PrivateKey.from_private_bytes(rng(32))
    if suite.name == "GK2":  # same scalar derivation as the suite's signing keys
        return P256SigningKey.generate(rng).to_cryptography()
    raise ValueError(f"no KEM for suite {suite.name}")


def transport_info(sid: bytes, epoch: int, idx: int) -> bytes:
    return cbor.dumps(["GridKey v1 key transport", sid, epoch, idx])


_TRANSPORT_SCHEMA = ((1, int), (2, bytes), (3, int), (4, int), (5, bytes))


class CentralizedServer:
    """Key server: picks the group key and HPKE-encrypts it to each member's static KEM key."""

    def __init__(
        self,
        suite: Suite,
        signing_key: SigningKey,
        members: Sequence[tuple[VerifyKey, KemPublicKey]],
        rng: Rng,
    ) -> None:
        self.suite = suite
        self.signing_key = signing_key
        self.members = list(members)
        self.verify_keys = {i: vk for i, (vk, _) in enumerate(self.members)}
        self.rng = rng
        self._hpke = hpke_suite(suite)
        self.epoch = 0
        self.sid = b""
        self.group_key = b""
        self.key_id = b""
        self._confirm_key = b""
        self.confirmed: set[int] = set()

    def distribute(self) -> list[bytes]:
        """Start a new epoch: one signed KeyTransport message per member, in member order."""
        self.epoch += 1
        self.sid = _new_sid(self.suite, self.rng, "centralized", self.epoch)
        self.group_key = self.rng(GROUP_KEY_LEN)
        self.key_id, self._confirm_key = key_schedule(self.suite, self.group_key, self.sid)
        self.confirmed = set()
        out = []
        for idx, (_, kem_public) in enumerate(self.members):
            ct = self._hpke.encrypt(self.group_key, kem_public, info=transport_info(self.sid, self.epoch, idx))
            payload = cbor.dumps({1: TYPE_KEY_TRANSPORT, 2: self.sid, 3: self.epoch, 4: idx, 5: ct})
            out.append(sign1(payload, self.signing_key))
        return out

    def receive_confirm(self, data: bytes) -> bool:
        idx = _accept_confirm(self.suite, data, self.verify_keys, self.sid, self.epoch, self.key_id, self._confirm_key)
        if idx is None:
            return False
        self.confirmed.add(idx)
        return True


class CentralizedMember:
    def __init__(
        self,
        suite: Suite,
        idx: int,
        signing_key: SigningKey,
        kem_private: KemPrivateKey,
        server_key: VerifyKey,
    ) -> None:
        self.suite = suite
        self.idx = idx
        self.signing_key = signing_key
        self.kem_private = kem_private
        self.server_key = server_key
        self._hpke = hpke_suite(suite)
        self._ct_len = hpke_kem_enc_len(suite) + GROUP_KEY_LEN + AEAD_TAG_LEN
        self.epoch = 0
        self.sid = b""
        self.group_key: bytes | None = None
        self.key_id: bytes | None = None

    def receive(self, data: bytes) -> bytes:
        """Accept a KeyTransport message and return the signed Confirm; raise :class:`Rejected`."""
        payload = _verified_payload(data, self.server_key, KEY_TRANSPORT_MSG_MAX)
        try:
            typ, sid, epoch, idx, ct = cbor.read_flat_map(payload, _TRANSPORT_SCHEMA)
        except DecodeError as exc:
            raise Rejected(f"malformed payload: {exc}") from None
        if typ != TYPE_KEY_TRANSPORT or len(sid) != SID_LEN or len(ct) != self._ct_len:
            raise Rejected("not a well-formed key transport message")
        if epoch <= self.epoch:
            raise Rejected("stale epoch")
        if idx != self.idx:
            raise Rejected("addressed to another member")
        try:
            group_key = self._hpke.decrypt(ct, self.kem_private, info=transport_info(sid, epoch, idx))
        except (InvalidTag, ValueError):
            raise Rejected("HPKE decryption failed") from None
        if len(group_key) != GROUP_KEY_LEN:
            raise Rejected("wrong group key length")
        self.epoch, self.sid, self.group_key = epoch, sid, group_key
        self.key_id, _ = key_schedule(self.suite, group_key, sid)
        return _confirm(self.suite, self.signing_key, sid, epoch, self.idx, group_key)


def setup_centralized(
    suite: Suite | str, n: int, *, seed: bytes | str | int = 0
) -> tuple[CentralizedServer, list[CentralizedMember]]:
    """Provision a key server and n members (identity and KEM keys); nothing here is timed."""
    suite = _as_suite(suite)
    if n < 1:
        raise ValueError("need at least one member")
    seeded = SeededRng(seed, label=b"GridKey bench centralized")
    server_key = suite.generate_signing_key(seeded.fork("server"))
    ids = [suite.generate_signing_key(seeded.fork(f"id:{i}")) for i in range(n)]
    kems = [kem_keygen(suite, seeded.fork(f"kem:{i}")) for i in range(n)]
    server = CentralizedServer(
        suite,
        server_key,
        [(sk.public_key, kem.public_key()) for sk, kem in zip(ids, kems, strict=True)],
        seeded.fork("server-session"),
    )
    members = [CentralizedMember(suite, i, ids[i], kems[i], server_key.public_key) for i in range(n)]
    return server, members


def run_centralized(suite: Suite | str, n: int, *, seed: bytes | str | int = 0) -> BaselineResult:
    """One key distribution to n members plus their confirmations."""
    suite = _as_suite(suite)
    server, members = setup_centralized(suite, n, seed=seed)
    pt = time.process_time_ns
    t0 = pt()
    transports = server.distribute()
    coord_ns = pt() - t0
    member_ns: list[int] = []
    confirms: list[bytes] = []
    for member, data in zip(members, transports, strict=True):
        t0 = pt()
        confirms.append(member.receive(data))
        member_ns.append(pt() - t0)
    t0 = pt()
    accepted = [server.receive_confirm(c) for c in confirms]
    coord_ns += pt() - t0
    agree = (
        all(accepted)
        and server.confirmed == set(range(n))
        and all(m.group_key == server.group_key and m.key_id == server.key_id for m in members)
    )
    return BaselineResult(
        scheme="centralized",
        suite=suite.name,
        n=n,
        agree=agree,
        member_msg_bytes_max=max(map(len, confirms)),
        member_cpu_ms=statistics.median(member_ns) / 1e6,
        coordinator_cpu_ms=coord_ns / 1e6,
        total_bytes=sum(map(len, transports)) + sum(map(len, confirms)),
        rounds=2,
        coordinator_msg_bytes_max=max(map(len, transports)),
    )


# --- LKH (RFC 2627), binary tree in heap layout -------------------------------------------------


def lkh_leaf(n: int, idx: int) -> int:
    """Node id of member ``idx``'s leaf in a tree over n members."""
    if not 0 <= idx < n:
        raise ValueError("member index out of range")
    return n + idx


def lkh_ancestors(node: int) -> list[int]:
    """Ancestors of ``node``, from its parent up to the root."""
    out = []
    while node > ROOT:
        node //= 2
        out.append(node)
    return out


def lkh_depth(node: int) -> int:
    return node.bit_length() - 1


def lkh_leave_wrap_count(n: int) -> int:
    """Wrapped keys in the rekey when the last leaf leaves: 2d - 1 with d = ceil(log2 n)."""
    return 2 * lkh_depth(lkh_leaf(n, n - 1)) - 1


def lkh_wrap_aad(sid: bytes, epoch: int, node: int, child: int) -> bytes:
    return cbor.dumps(["GridKey v1 lkh wrap", sid, epoch, node, child])


@dataclass(frozen=True)
class Wrap:
    node: int  # the node whose new key this is
    child: int  # the node whose key encrypts it
    nonce: bytes
    ciphertext: bytes


class LkhServer:
    """Key server holding the whole key tree; rekeys on a leave."""

    def __init__(self, suite: Suite, n: int, signing_key: SigningKey, members: Sequence[VerifyKey], rng: Rng) -> None:
        if n < 2 or len(members) != n:
            raise ValueError("an LKH tree needs n >= 2 members and one verify key each")
        self.suite = suite
        self.n = n
        self.signing_key = signing_key
        self.verify_keys = dict(enumerate(members))
        self.rng = rng
        self.node_keys = {v: rng(GROUP_KEY_LEN) for v in range(1, 2 * n)}
        self.epoch = 0
        self.sid = b""
        self.key_id = b""
        self._confirm_key = b""
        self.removed: int | None = None
        self.confirmed: set[int] = set()

    @property
    def group_key(self) -> bytes:
        return self.node_keys[ROOT]

    def provision(self, idx: int) -> dict[int, bytes]:
        """The keys member ``idx`` holds: its leaf key and every key on its path to the root."""
        leaf = lkh_leaf(self.n, idx)
        return {v: self.node_keys[v] for v in (leaf, *lkh_ancestors(leaf))}

    def rekey_leave(self, idx: int) -> bytes:
        """Remove member ``idx`` and return the signed multicast rekey message."""
        if self.removed is not None:
            raise ValueError("this baseline models a single leave per tree")
        leaf = lkh_leaf(self.n, idx)
        self.removed = leaf
        del self.verify_keys[idx]
        del self.node_keys[leaf]
        self.epoch += 1
        self.sid = _new_sid(self.suite, self.rng, "lkh", self.epoch)
        wraps = []
        for node in lkh_ancestors(leaf):  # bottom-up, so an on-path child already has its new key
            new_key = self.rng(GROUP_KEY_LEN)
            for child in (2 * node, 2 * node + 1):
                if child == leaf:
                    continue
                nonce = self.rng(AEAD_NONCE_LEN)
                aad = lkh_wrap_aad(self.sid, self.epoch, node, child)
                wraps.append([node, child, nonce, AESGCM(self.node_keys[child]).encrypt(nonce, new_key, aad)])
            self.node_keys[node] = new_key
        self.key_id, self._confirm_key = key_schedule(self.suite, self.group_key, self.sid)
        self.confirmed = set()
        payload = cbor.dumps({1: TYPE_LKH_REKEY, 2: self.sid, 3: self.epoch, 4: wraps})
        return sign1(payload, self.signing_key)

    def receive_confirm(self, data: bytes) -> bool:
        idx = _accept_confirm(self.suite, data, self.verify_keys, self.sid, self.epoch, self.key_id, self._confirm_key)
        if idx is None:
            return False
        self.confirmed.add(idx)
        return True


def decode_rekey(data: bytes, server_key: VerifyKey) -> tuple[bytes, int, list[Wrap]]:
    """Verify and strictly decode an LkhRekey message: (sid, epoch, wraps). Raises :class:`Rejected`."""
    payload = _verified_payload(data, server_key, MAX_MSG_SIZE)
    try:
        m = cbor.check_fields(cbor.loads(payload, max_size=MAX_MSG_SIZE), {1: int, 2: bytes, 3: int, 4: list})
    except DecodeError as exc:
        raise Rejected(f"malformed payload: {exc}") from None
    if m[1] != TYPE_LKH_REKEY or len(m[2]) != SID_LEN:
        raise Rejected("not a well-formed rekey message")
    wraps = []
    for item in m[4]:
        if not (type(item) is list and len(item) == 4):
            raise Rejected("wrap must be [node, child, nonce, ciphertext]")
        node, child, nonce, ct = item
        if not (type(node) is int and type(child) is int and type(nonce) is bytes and type(ct) is bytes):
            raise Rejected("wrap has wrong types")
        if node < ROOT or child // 2 != node or len(nonce) != AEAD_NONCE_LEN or len(ct) != LKH_WRAP_CT_LEN:
            raise Rejected("malformed wrap")
        wraps.append(Wrap(node, child, nonce, ct))
    return m[2], m[3], wraps


class LkhMember:
    def __init__(
        self,
        suite: Suite,
        idx: int,
        leaf: int,
        signing_key: SigningKey,
        keys: dict[int, bytes],
        server_key: VerifyKey,
    ) -> None:
        self.suite = suite
        self.idx = idx
        self.leaf = leaf
        self.signing_key = signing_key
        self.keys = dict(keys)
        self.server_key = server_key
        self._path = frozenset(lkh_ancestors(leaf))
        self._chain = self._path | {leaf}
        if set(self.keys) != self._chain:
            raise ValueError("a member holds exactly the keys on its leaf-to-root path")
        self.epoch = 0
        self.sid = b""
        self.key_id: bytes | None = None

    @property
    def group_key(self) -> bytes:
        return self.keys[ROOT]

    def receive_rekey(self, data: bytes) -> bytes:
        """Unwrap the new keys on this member's path; return the signed Confirm or raise :class:`Rejected`."""
        sid, epoch, wraps = decode_rekey(data, self.server_key)
        if epoch <= self.epoch:
            raise Rejected("stale epoch")
        keys = dict(self.keys)
        touched: set[int] = set()
        updated: set[int] = set()
        for w in wraps:
            touched.add(w.node)
            if w.node in self._path and w.child in self._chain:
                aad = lkh_wrap_aad(sid, epoch, w.node, w.child)
                try:
                    keys[w.node] = AESGCM(keys[w.child]).decrypt(w.nonce, w.ciphertext, aad)
                except InvalidTag:
                    raise Rejected("key unwrap failed") from None
                updated.add(w.node)
        if touched & self._path != updated or ROOT not in updated:
            raise Rejected("rekey does not reach this member (removed, or keys missing)")
        self.keys, self.epoch, self.sid = keys, epoch, sid
        self.key_id, _ = key_schedule(self.suite, keys[ROOT], sid)
        return _confirm(self.suite, self.signing_key, sid, epoch, self.idx, keys[ROOT])


def setup_lkh(suite: Suite | str, n: int, *, seed: bytes | str | int = 0) -> tuple[LkhServer, list[LkhMember]]:
    """Provision a key server, the key tree and n members holding their path keys; nothing here is timed."""
    suite = _as_suite(suite)
    seeded = SeededRng(seed, label=b"GridKey bench lkh")
    server_key = suite.generate_signing_key(seeded.fork("server"))
    ids = [suite.generate_signing_key(seeded.fork(f"id:{i}")) for i in range(n)]
    server = LkhServer(suite, n, server_key, [sk.public_key for sk in ids], seeded.fork("server-session"))
    members = [
        LkhMember(suite, i, lkh_leaf(n, i), ids[i], server.provision(i), server_key.public_key) for i in range(n)
    ]
    return server, members


def run_lkh(suite: Suite | str, n: int, *, seed: bytes | str | int = 0) -> BaselineResult:
    """One LKH rekey after the member at the last leaf leaves a group of n, plus n-1 confirmations."""
    suite = _as_suite(suite)
    server, members = setup_lkh(suite, n, seed=seed)
    old_root = server.group_key
    remaining = members[:-1]
    pt = time.process_time_ns
    t0 = pt()
    rekey = server.rekey_leave(n - 1)
    coord_ns = pt() - t0
    member_ns: list[int] = []
    confirms: list[bytes] = []
    for member in remaining:
        t0 = pt()
        confirms.append(member.receive_rekey(rekey))
        member_ns.append(pt() - t0)
    t0 = pt()
    accepted = [server.receive_confirm(c) for c in confirms]
    coord_ns += pt() - t0
    agree = (
        all(accepted)
        and server.confirmed == {m.idx for m in remaining}
        and server.group_key != old_root
        and all(m.group_key == server.group_key and m.key_id == server.key_id for m in remaining)
    )
    return BaselineResult(
        scheme="lkh",
        suite=suite.name,
        n=n,
        agree=agree,
        member_msg_bytes_max=max(map(len, confirms)),
        member_cpu_ms=statistics.median(member_ns) / 1e6,
        coordinator_cpu_ms=coord_ns / 1e6,
        total_bytes=len(rekey) * len(remaining) + sum(map(len, confirms)),
        rounds=2,
        coordinator_msg_bytes_max=len(rekey),
    )
