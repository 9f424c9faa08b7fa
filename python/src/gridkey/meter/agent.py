"""A meter agent: one identity, a real protocol participant over CoAP (or HTTP).

It enrols with a signed request, observes each of its groups, takes part in every negotiation
(``GroupMember`` from the protocol core does the cryptography), keeps the epoch keys in memory
only, decrypts group commands and sends encrypted readings. It verifies the gateway's and every
peer's certificate against the CA it was provisioned with, and the CA's revocation list.

Robustness: Observe notifications may be lost, reordered or stop (a gateway restart forgets its
observers), so the agent also catches up by fetching the session's messages when it sees a gap,
when a negotiation stalls, and every ``resync_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ..crypto.groups import Rng
from ..crypto.identity import CertificateError, load_certificate, read_crl, verify_certificate
from ..crypto.rng import system_rng
from ..crypto.signatures import SigningKey, verify_key_from_cryptography
from ..crypto.suite import SUITES
from ..protocol.directory import KeyDirectory, RevocationRollback
from ..protocol.errors import DecodeError, DropReason, Rejected
from ..protocol.events import Aborted, Dropped, KeyEstablished, KeysNeeded, Refused, Send
from ..protocol.groupdata import DATA_PAGE, ContentType, GroupChannel, parse_data_message
from ..protocol.member import DEFAULT_POLICY, GroupMember, MemberIdentity
from ..protocol.messages import Start, decode
from ..protocol.policy import MemberPolicy
from ..protocol.requests import MAX_DETAIL, MeterRequest
from .links import Link, LinkError

log = logging.getLogger(__name__)

HELD_DATA = 64  # group data messages kept per group for a key not yet established (a late Commit)
REFUSAL_HOLD_S = 60.0  # no rejoin for this long after refusing a group's Start (see _rejoin)
ENROL_BACKOFF_S = (0.5, 30.0)  # first retry delay and the cap (each jittered by 0.5..1.5x)
STOP_TIMEOUT_S = 5.0  # closing the link must not hold up a shutdown (aiocoap may wait on exchanges)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def cancel_all(tasks: list[asyncio.Task], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Cancel ``tasks`` (a list the tasks themselves may still append to) until all are done.

    Cancelling once and gathering is not enough: a task may spawn another just before its
    cancellation lands, and on Python 3.11 ``asyncio.wait_for`` swallows a cancellation that
    arrives as its inner future completes, so a loop can survive a cancel() and keep running.
    Cancels again every 0.1 s; returns the names of tasks still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [t for t in tasks if not t.done()]
        if not pending or time.monotonic() > deadline:
            break
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" noise at exit
    stuck = [t.get_name() for t in tasks if not t.done()]
    tasks.clear()
    return stuck


@dataclass
class GroupView:
    """What one meter knows about one of its groups (metadata only; keys stay in ``member``)."""

    member: GroupMember
    channels: dict[bytes, GroupChannel] = field(default_factory=dict)  # key id -> channel
    epochs: list[dict] = field(default_factory=list)
    last_progress: float = 0.0
    data_cursor: int = 0
    start_wire: dict[bytes, bytes] = field(default_factory=dict)  # sid -> Start (for KeysNeeded retries)
    seen: set[bytes] = field(default_factory=set)  # coordinator messages already fed (exact bytes)
    rejoin_asked: set[bytes] = field(default_factory=set)  # Starts without us we already reacted to
    done_refs: set[tuple[bytes, str]] = field(default_factory=set)  # (sid, kind) already fed
    data_wanted: asyncio.Event = field(default_factory=asyncio.Event)  # new group data to fetch
    refused_at: float = -1e9  # monotonic time we last refused one of this group's Starts
    last_refusal: tuple | None = None  # (reason, detail) last reported, so it is said once
    # group data under a key id we do not hold yet (its Commit may still be on the way): opened
    # when that key is established; the oldest go first when more arrive
    held: deque[tuple[bytes, bytes]] = field(default_factory=lambda: deque(maxlen=HELD_DATA))


@dataclass
class AgentStats:
    commands: list[dict] = field(default_factory=list)
    readings_sent: int = 0
    readings_received: int = 0
    round_msgs_sent: int = 0
    round_bytes_sent: int = 0
    round_msg_max: int = 0
    drops: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class MeterAgent:
    def __init__(
        self,
        *,
        meter_id: str,
        signing_key: SigningKey,
        cert_der: bytes,
        ca_cert: x509.Certificate,
        link: Link,
        clock: Callable[[], int] = wall_ms,
        rng: Rng = system_rng,
        resync_s: float = 10.0,
        stall_s: float = 1.0,
        on_event: Callable[[str, dict], None] | None = None,
        policy: MemberPolicy = DEFAULT_POLICY,
        crl_refresh_s: float = 300.0,
    ) -> None:
        self.crl_refresh_s = crl_refresh_s  # how soon a revocation at the CA reaches this member
        self._crl_fetched = 0.0
        self.meter_id = meter_id
        self.policy = policy  # provisioned here, never taken from a Start (docs/protocol.md §4.4)
        self.key = signing_key
        self.cert_der = cert_der
        self.ca_cert = ca_cert
        self.link = link
        self.clock = clock
        self.rng = rng
        self.resync_s = resync_s
        self.stall_s = stall_s
        self.on_event = on_event or (lambda kind, info: None)
        self.identity = MemberIdentity(meter_id, signing_key)
        self.directory = KeyDirectory()
        self.groups: dict[str, GroupView] = {}
        self.stats = AgentStats()
        self.coordinator_key = None
        self.gateway_serial: int | None = None
        self.gateway_id = ""
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._crl: x509.CertificateRevocationList | None = None
        self.revoked = False
        self.latest_readings: dict[str, dict] = {}  # sender -> its last decrypted reading
        self._link_open = False
        self.enrolled = False
        self.enrol_attempts = 0
        self.enrol_error: str | None = None  # why the last enrolment attempt failed (status)
        self._jitter = random.Random()  # retry spacing only, never key material

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """One enrolment attempt; raises what went wrong (see :meth:`start_retrying`)."""
        if not self._link_open:
            await self.link.open()
            self._link_open = True
        gateway_id, gw_der, _ca_der = await self.link.gateway_info()
        await self._refresh_crl()
        ident = self._verify(gw_der)
        if ident.role != "gateway":
            raise LinkError(403, f"{gateway_id} does not hold a gateway certificate")
        self.gateway_id = ident.member_id
        self.gateway_serial = ident.serial
        self.coordinator_key = ident.key
        req = MeterRequest("enroll", self.meter_id, self.clock(), cert_der=self.cert_der).sign(self.key)
        await self.link.enroll(req)
        self.enrolled = True
        self.enrol_error = None
        self._spawn(self._discover_loop(), f"{self.meter_id}-discover")

    async def start_retrying(
        self, backoff_s: tuple[float, float] = ENROL_BACKOFF_S, gate: asyncio.Semaphore | None = None
    ) -> None:
        """Enrol, retrying with jittered exponential backoff until it works.

        On a rural link anything can damage an answer in transit: a timeout, a garbled CBOR body, a
        gateway certificate whose signature no longer verifies, a 4.xx that plain CoAP cannot
        authenticate, a timestamp that went stale on the way. None of it is final for a meter in the
        field, so every failure is retried (a fresh signed request each time) and reported; a
        gateway that keeps refusing just sees the meter at the slowest pace.
        """
        delay, cap = backoff_s
        while True:
            try:
                async with gate if gate is not None else contextlib.nullcontext():  # per attempt, not per sleep
                    self.enrol_attempts += 1
                    await self.start()
                return
            except asyncio.CancelledError:
                raise
            except (LinkError, CertificateError, DecodeError, ValueError, OSError) as exc:
                self.enrol_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # hostile input must not end the meter; but say it loudly
                log.exception("%s: enrolment attempt failed", self.meter_id)
                self.enrol_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: enrolment attempt %d failed (%s); retrying", self.meter_id, self.enrol_attempts,
                        self.enrol_error)  # fmt: skip
            self.on_event("enrol_retry", {"attempt": self.enrol_attempts, "error": self.enrol_error})
            await asyncio.sleep(delay * (0.5 + self._jitter.random()))
            delay = min(delay * 2, cap)

    async def stop(self) -> None:
        """Cancel every task, then close the link (see :func:`cancel_all` for why not just gather)."""
        self._stopping = True
        stuck = await cancel_all(self._tasks)
        if stuck:
            log.warning("%s: %d task(s) ignored cancellation: %s", self.meter_id, len(stuck), stuck)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.link.close(), STOP_TIMEOUT_S)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Start a background task owned by this agent (none once stop() has begun)."""
        if self._stopping:
            coro.close()
            return
        self._tasks = [t for t in self._tasks if not t.done()]  # one-shot tasks (reports) come and go
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _verify(self, der: bytes):
        return verify_certificate(der, self.ca_cert, now=datetime.now(UTC), crl=self._crl)

    async def _refresh_crl(self) -> None:
        """Fetch the gateway's copy of the CA's CRL and adopt it if it verifies and is newer.

        The gateway only relays it: a CRL it withholds, lets go stale or rolls back is refused here
        and the member's Starts fail closed (no usable CRL, no session), with the reason reported.
        """
        try:
            raw = await self.link.crl()
            if not raw:
                raise CertificateError("crl-missing", "the gateway serves no CRL")
            try:
                crl = x509.load_der_x509_crl(raw)
            except Exception as exc:  # ValueError, x509.InvalidVersion, ...: all of them mean "not a CRL"
                raise CertificateError("crl-parse", f"not a valid CRL ({type(exc).__name__})") from None
            rev = read_crl(crl, self.ca_cert, datetime.now(UTC))
            gone = self.directory.apply_revocation(rev)
        except LinkError as exc:
            self._crl_fetched = time.monotonic()  # look again at the refresh pace, not at every resync
            self._crl_problem(f"CRL not fetched: {exc}")
            return
        except (CertificateError, RevocationRollback, ValueError) as exc:
            self._crl_fetched = time.monotonic()
            self._crl_problem(f"CRL refused: {exc}")
            return
        self._crl = crl
        self._crl_fetched = time.monotonic()
        if self.gateway_serial is not None and self.gateway_serial in rev.revoked:
            # the coordinator's own certificate is revoked: trust none of its messages any more
            log.error("%s: the gateway's certificate is revoked; refusing its messages", self.meter_id)
            self.coordinator_key = None
            for view in self.groups.values():
                view.member.distrust_coordinator()
            self.on_event("gateway_revoked", {"gateway_id": self.gateway_id})
        for member_id in gone:
            self.on_event("peer_revoked", {"member_id": member_id})

    def _crl_problem(self, detail: str) -> None:
        self.stats.errors.append(detail)
        self.on_event("crl", {"detail": detail})

    async def _discover_loop(self) -> None:
        """Learn which groups this meter is in: observed where the link can, re-checked on resync.

        An observation silently dies when the gateway restarts (it forgets its observers), so the
        group list is also fetched every ``resync_s`` seconds.
        """
        self._spawn(self._recheck_groups(), f"{self.meter_id}-recheck")
        backoff = 0.2
        while True:
            try:
                async for group_ids in self.link.watch_groups(self.meter_id):
                    backoff = 0.2
                    for gid in group_ids:
                        if gid not in self.groups:
                            self._join(gid)
            except LinkError as exc:
                if exc.status == 403:
                    # Plain CoAP answers are not authenticated, so a 4.03 may be forged: note it,
                    # stop asking often, but keep checking instead of giving up for good.
                    if not self.revoked:
                        self.revoked = True
                        self.on_event("revoked", {"meter_id": self.meter_id})
                    backoff = self.resync_s
                else:
                    self.stats.errors.append(f"discover: {exc}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("discover loop failed")
                self.stats.errors.append(f"discover: {type(exc).__name__}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.resync_s)

    async def _recheck_groups(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            try:
                group_ids = await self.link.meter_groups(self.meter_id)
            except LinkError as exc:
                if exc.status != 403:
                    self.stats.errors.append(f"recheck: {exc}")
                continue
            self.revoked = False
            for gid in group_ids:
                if gid not in self.groups:
                    self._join(gid)

    def _join(self, group_id: str) -> None:
        view = GroupView(
            GroupMember(
                suite=SUITES["GK1"],  # replaced by the Start's suite on first contact
                me=self.identity,
                group_id=group_id,
                coordinator_keys=[self.coordinator_key] if self.coordinator_key else [],
                directory=self.directory,
                rng=self.rng,
                policy=self.policy,
            )
        )
        self.groups[group_id] = view
        self._spawn(self._observe_loop(group_id), f"{self.meter_id}-{group_id}")
        self._spawn(self._watchdog(group_id), f"{self.meter_id}-{group_id}-wd")
        self._spawn(self._data_loop(view), f"{self.meter_id}-{group_id}-data")

    # --- receiving --------------------------------------------------------------------------

    async def _observe_loop(self, group_id: str) -> None:
        backoff = 0.2
        while True:
            try:
                first = True
                async for _cursor, item in self.link.inbox(self.meter_id, group_id):
                    if first:
                        first = False
                        backoff = 0.2
                        await self.catch_up(group_id)
                    if item is not None:
                        await self._on_item(group_id, item)
            except LinkError as exc:
                if exc.status == 403:
                    # Revoked or removed - or a forged 4.03 (plain CoAP is unauthenticated). Say so
                    # once, then only look again at the slow resync pace.
                    self.on_event("refused", {"group_id": group_id, "detail": exc.detail})
                    await asyncio.sleep(self.resync_s)
                    continue
                self.stats.errors.append(f"observe {group_id}: {exc}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the agent alive; report
                log.exception("observe loop failed")
                self.stats.errors.append(f"observe {group_id}: {type(exc).__name__}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _on_item(self, group_id: str, item: list) -> None:
        if item[0] == "s":
            _, sid, kind, data = item
            view = self.groups.get(group_id)
            if view is None:
                return
            if data is None:
                if (sid, kind) in view.done_refs:
                    return  # a reminder of a message we already have
                try:
                    data = await self.link.session_kind(group_id, kind)
                except LinkError:
                    return
            await self.feed(group_id, data)
            view.done_refs.add((sid, kind))
            if len(view.done_refs) > 64:
                view.done_refs.clear()
        elif item[0] == "d":
            # Fetched by the group's data task: a backlog of readings must never hold a Start
            # behind it on this loop (a controller with 10,000 readings to read timed out of every
            # negotiation that way), and one fetcher means one block-wise walk of the list at a time.
            view = self.groups.get(group_id)
            if view is not None:
                view.data_wanted.set()

    async def catch_up(self, group_id: str) -> None:
        """Feed every coordinator message of the latest session (duplicates are skipped).

        Used when (re)subscribing and on the slow resync; a stalled negotiation uses the cheaper
        :meth:`catch_up_next`, which fetches only the message the member is waiting for.
        """
        try:
            messages = await self.link.session(group_id)
        except LinkError as exc:
            self.stats.errors.append(f"catch-up {group_id}: {exc}")
            return
        for data in messages:
            await self.feed(group_id, data)

    async def catch_up_next(self, group_id: str) -> None:
        """Fetch just the coordinator message our live session waits for (and any abort)."""
        view = self.groups.get(group_id)
        session = view.member.session if view else None
        if session is None or session.is_terminal:
            return await self.catch_up(group_id)
        waiting = {"await_bundle1": "bundle1", "await_bundle2": "bundle2"}.get(session.state.value, "commit")
        for kind in (waiting, "abort", "start"):
            try:
                data = await self.link.session_kind(group_id, kind)
            except LinkError:
                continue  # not there yet (4.04) or unreachable: the next stall check tries again
            await self.feed(group_id, data)
            if kind != "abort":
                return

    async def feed(self, group_id: str, data: bytes) -> None:
        view = self.groups.get(group_id)
        if view is None or data in view.seen:
            return
        if view.member.session is None:
            self._adopt_suite(view, data)
        member = view.member
        events = member.receive(data, self.clock())
        retry_start = False
        for ev in events:
            if isinstance(ev, Send):
                view.last_progress = time.monotonic()
                await self._post_round(group_id, ev.data)
            elif isinstance(ev, KeysNeeded):
                if ev.crl:
                    await self._refresh_crl()
                if ev.kids or not ev.crl:
                    await self._fetch_certs(group_id)
                retry_start = True
            elif isinstance(ev, Refused):
                if not any(isinstance(e, KeysNeeded) for e in events):  # final only after the retry
                    self._refused(group_id, ev)
            elif isinstance(ev, KeyEstablished):
                view.last_progress = time.monotonic()
                self._on_key(group_id, view, ev)
            elif isinstance(ev, Aborted):
                self.on_event("aborted", {"group_id": group_id, "epoch": ev.epoch, "reason": ev.reason.value})
                if self.meter_id in ev.excluded:
                    await self._rejoin(group_id)
            elif isinstance(ev, Dropped):
                self.stats.drops[ev.reason.value] += 1
                if ev.reason == DropReason.NON_MEMBER and data not in view.rejoin_asked:
                    # A session for our group without us: we were excluded (e.g. offline at a
                    # deadline) or joined while it ran. Ask once per session to be taken back.
                    view.rejoin_asked.add(data)
                    await self._rejoin(group_id)
        if retry_start:
            for ev in member.receive(data, self.clock()):
                if isinstance(ev, Send):
                    await self._post_round(group_id, ev.data)
                elif isinstance(ev, Refused):
                    self._refused(group_id, ev)
        else:
            view.seen.add(data)
            if len(view.seen) > 64:
                view.seen.clear()
        session = member.session
        if session is not None and not session.is_terminal and session._pending:
            await self.catch_up_next(group_id)  # something arrived early: we missed a message

    def _refused(self, group_id: str, ev: Refused) -> None:
        """A Start our policy refuses: say so (status, log, event), once per reason and group."""
        view = self.groups.get(group_id)
        if view is not None:
            view.refused_at = time.monotonic()
            if view.last_refusal == (ev.reason, ev.detail):
                return
            view.last_refusal = (ev.reason, ev.detail)
        self.stats.drops[ev.reason.value] += 1
        self.stats.errors.append(f"start refused for {group_id}: {ev.reason.value}: {ev.detail}")
        log.warning("%s: refused a Start for %s: %s (%s)", self.meter_id, group_id, ev.reason.value, ev.detail)
        self.on_event("start_refused", {"group_id": group_id, "reason": ev.reason.value, "detail": ev.detail})
        self._spawn(self._report_refusal(group_id, ev), f"refusal-{group_id}")

    async def _report_refusal(self, group_id: str, ev: Refused) -> None:
        """Tell the gateway (signed) so its operators see it too; best effort -- in end-to-end mode
        the gateway may drop it, and this member's own status stays the record that counts."""
        req = MeterRequest(
            "refusal",
            self.meter_id,
            self.clock(),
            group_id=group_id,
            epoch=ev.epoch,
            reason=ev.reason.value,
            detail=ev.detail[:MAX_DETAIL],
        ).sign(self.key)
        try:
            await self.link.report_refusal(group_id, req)
        except LinkError as exc:
            self.stats.errors.append(f"refusal report {group_id}: {exc}")
            view = self.groups.get(group_id)
            if exc.status >= 500 and view is not None and view.last_refusal == (ev.reason, ev.detail):
                view.last_refusal = None  # not heard: the next refusal of this kind is reported again

    def _adopt_suite(self, view: GroupView, data: bytes) -> None:
        """The group's suite is only known from its Start; rebuild the member once we see it."""
        try:
            msg = decode(data).msg
        except Exception:
            return
        if isinstance(msg, Start) and msg.suite != view.member.suite.name and view.member.session is None:
            old = view.member
            view.member = GroupMember(
                suite=SUITES[msg.suite],
                me=self.identity,
                group_id=old.group_id,
                coordinator_keys=[self.coordinator_key] if self.coordinator_key else [],
                directory=self.directory,
                rng=self.rng,
                committed_epoch=old.committed_epoch,
                policy=self.policy,
            )

    async def _post_round(self, group_id: str, data: bytes) -> None:
        self.stats.round_msgs_sent += 1
        self.stats.round_bytes_sent += len(data)
        self.stats.round_msg_max = max(self.stats.round_msg_max, len(data))
        try:
            await self.link.post_round(group_id, data)
        except LinkError as exc:
            if exc.status != 409:  # 409: the session moved on, harmless
                self.stats.errors.append(f"round {group_id}: {exc}")

    async def _fetch_certs(self, group_id: str) -> None:
        await self._refresh_crl()
        for member_id, role, der in await self.link.certs(group_id):
            try:
                ident = self._verify(der)
            except CertificateError as exc:
                self.stats.errors.append(f"peer {member_id} rejected: {exc}")
                with contextlib.suppress(CertificateError, ValueError):
                    kid = verify_key_from_cryptography(load_certificate(der).public_key()).kid
                    self.directory.remove(kid)
                    if exc.check == "revoked":  # so a roster naming it is refused as revoked_peer
                        self.directory.revoked_kids[kid] = member_id
                continue
            if ident.member_id != member_id or ident.role != role:
                continue
            # A non-member role (the gateway itself, say) is recorded with that role: it is never a
            # peer (lookup filters roles) and a roster naming it is refused as wrong_role.
            with contextlib.suppress(ValueError):  # revoked by the CRL just applied
                self.directory.add(ident.member_id, ident.key, ident.role, ident.serial)

    async def _rejoin(self, group_id: str) -> None:
        view = self.groups.get(group_id)
        if view is not None and time.monotonic() - view.refused_at < REFUSAL_HOLD_S:
            # we refused this group's Start just now: asking back in would only start another
            # negotiation we refuse (a loop of rekeys); wait until the reason may have gone
            return
        epoch = view.member.committed_epoch if view is not None else None
        req = MeterRequest("rejoin", self.meter_id, self.clock(), group_id=group_id, epoch=epoch).sign(self.key)
        try:
            await self.link.rejoin(group_id, req)
            self.on_event("rejoin", {"group_id": group_id})
        except LinkError as exc:
            self.stats.errors.append(f"rejoin {group_id}: {exc}")

    def _on_key(self, group_id: str, view: GroupView, ev: KeyEstablished) -> None:
        keys = ev.keys
        view.channels[keys.key_id] = GroupChannel(view.member.suite, keys, self.meter_id, self.directory)
        while len(view.channels) > 2:  # current and previous epoch only
            view.channels.pop(next(iter(view.channels)))
        info = {"group_id": group_id, "epoch": keys.epoch, "key_id": keys.key_id.hex(), "at": self.clock()}
        view.epochs.append(info)
        view.last_refusal = None  # a later refusal, even for the same reason, is news again
        self.on_event("epoch", info)
        waiting = [d for k, d in view.held if k == keys.key_id]
        if waiting:  # data that overtook our Commit
            view.held = deque(((k, d) for k, d in view.held if k != keys.key_id), maxlen=HELD_DATA)
            for data in waiting:
                self._open(group_id, view, data)

    async def _data_loop(self, view: GroupView) -> None:
        """Fetch the group's data whenever a notification (or the resync) says there is some; pages
        until the gateway has nothing newer."""
        group_id = view.member.group_id
        while True:
            await view.data_wanted.wait()
            view.data_wanted.clear()
            try:
                while await self._fetch_data(group_id) >= DATA_PAGE:
                    pass
            except Exception as exc:  # keep fetching later; report
                log.exception("data fetch failed")
                self.stats.errors.append(f"data {group_id}: {type(exc).__name__}")

    async def _fetch_data(self, group_id: str) -> int:
        """One page of group data after our cursor; how many rows it held (0 on a failed fetch)."""
        view = self.groups[group_id]
        try:
            rows = await self.link.data_since(group_id, view.data_cursor)
        except LinkError as exc:
            self.stats.errors.append(f"data {group_id}: {exc}")
            return 0
        for msg_id, _sender, data in rows:
            view.data_cursor = max(view.data_cursor, msg_id)
            self._open(group_id, view, data)
        return len(rows)

    def _open(self, group_id: str, view: GroupView, data: bytes) -> None:
        try:
            key_id, sender, _, _, _ = parse_data_message(data)
        except (Rejected, DecodeError):
            self.stats.drops["data_malformed"] += 1
            return
        channel = view.channels.get(key_id)
        if channel is None:
            if len(view.held) == view.held.maxlen:
                self.stats.drops["data_unknown_key"] += 1  # the oldest held one is let go
            view.held.append((key_id, data))
            return
        roster = channel.keys.roster
        if sender < len(roster) and roster[sender].member_id == self.meter_id:
            return  # our own message, relayed back by the gateway
        try:
            got = channel.open(data)
        except Rejected as exc:
            self.stats.drops[f"data_{exc.reason.value}"] += 1
            return
        if got.content_type == ContentType.COMMAND:
            info = {"group_id": group_id, "epoch": got.epoch, "from": got.sender_id, "seq": got.seq}
            try:
                info["command"] = json.loads(got.plaintext)
            except ValueError:
                info["command"] = got.plaintext.hex()
            self.stats.commands.append(info)
            self.on_event("command", info)
        else:
            self.stats.readings_received += 1
            try:
                reading = json.loads(got.plaintext)
            except ValueError:
                reading = None
            if isinstance(reading, dict):
                self.latest_readings[got.sender_id] = reading
            info = {"group_id": group_id, "from": got.sender_id, "epoch": got.epoch, "seq": got.seq}
            # The digest names the relayed message (the gateway stores the same one), so whoever
            # hosts this member can match what it decrypted to the gateway's public metadata.
            info["digest"] = hashlib.sha256(data).hexdigest()
            info["value"] = reading if reading is not None else {"hex": got.plaintext.hex()}
            self.on_event("reading", info)

    async def _watchdog(self, group_id: str) -> None:
        """Stall and resync checks; survives anything a forged or garbled reply can cause."""
        state = {"last_resync": time.monotonic()}
        while True:
            await asyncio.sleep(0.25)
            try:
                await self._watchdog_step(group_id, state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watchdog for %s: %s", group_id, exc)
                self.stats.errors.append(f"watchdog {group_id}: {type(exc).__name__}")

    async def _watchdog_step(self, group_id: str, state: dict) -> None:
        view = self.groups.get(group_id)
        if view is None:
            return
        now = time.monotonic()
        for ev in view.member.tick(self.clock()):
            if isinstance(ev, Aborted):
                self.on_event("aborted", {"group_id": group_id, "epoch": ev.epoch, "reason": ev.reason.value})
        session = view.member.session
        live = session is not None and not session.is_terminal
        # A bigger group legitimately takes longer per round: do not mistake that for a stall.
        stall = self.stall_s * max(1.0, session.n / 10) if live else self.stall_s
        # Past its deadline a confirmed session only waits for a Commit that may never come (it
        # keeps its key): look for it at the resync pace below, not every stall interval forever.
        overdue = live and self.clock() > session.start.deadline  # type: ignore[union-attr]
        if live and not overdue and now - view.last_progress > stall:
            view.last_progress = now
            pending = view.member.resend()
            if pending is not None:  # our last message may have died with a gateway process
                await self._post_round(group_id, pending)
            await self.catch_up_next(group_id)
        elif now - state["last_resync"] > self.resync_s:
            state["last_resync"] = now
            await self.catch_up(group_id)
            view.data_wanted.set()
            if time.monotonic() - self._crl_fetched > self.crl_refresh_s:
                await self._refresh_crl()
            if view.member.keyless:
                # e.g. after a power cut: the gateway's newest epoch is one we hold no key for
                self.on_event("keyless", {"group_id": group_id, "epoch": view.member.committed_epoch})
                await self._rejoin(group_id)

    # --- sending ----------------------------------------------------------------------------

    def current_channel(self, group_id: str) -> GroupChannel | None:
        view = self.groups.get(group_id)
        if view is None or view.member.current is None:
            return None
        return view.channels.get(view.member.current.key_id)

    async def send_reading(self, group_id: str, reading: dict) -> dict | None:
        channel = self.current_channel(group_id)
        if channel is None:
            return None
        data = channel.seal(json.dumps(reading, separators=(",", ":")).encode())
        out = await self.link.post_data(group_id, data)
        self.stats.readings_sent += 1
        return out

    async def send_command(self, group_id: str, command: bytes) -> dict:
        """Controller only: sign as the controller, encrypt under the current epoch key."""
        channel = self.current_channel(group_id)
        if channel is None:
            raise LinkError(409, f"no committed epoch key for {group_id} yet")
        data = channel.seal_command(command, self.key)
        out = await self.link.post_data(group_id, data)
        return {"group_id": group_id, "epoch": channel.keys.epoch, "key_id": channel.keys.key_id.hex(), **out}

    def status(self) -> dict:
        """Metadata for status files and dashboards: never key material."""
        return {
            "meter_id": self.meter_id,
            "enrolled": self.enrolled,
            "enrol_attempts": self.enrol_attempts,
            "enrol_error": self.enrol_error,
            "revoked": self.revoked,
            "groups": {
                gid: {
                    "epoch": v.member.current.epoch if v.member.current else 0,
                    "key_id": v.member.current.key_id.hex() if v.member.current else None,
                    "epochs_seen": len(v.epochs),
                }
                for gid, v in self.groups.items()
            },
            "commands": self.stats.commands[-20:],
            "commands_received": len(self.stats.commands),
            "readings_sent": self.stats.readings_sent,
            "round_msgs_sent": self.stats.round_msgs_sent,
            "round_bytes_sent": self.stats.round_bytes_sent,
            "round_msg_max": self.stats.round_msg_max,
            "link_bytes_sent": getattr(self.link, "bytes_sent", 0),
            "link_bytes_received": getattr(self.link, "bytes_received", 0),
            "link_reopened": getattr(self.link, "reopened", 0),
            "readings_received": self.stats.readings_received,
            "drops": dict(self.stats.drops),
            "errors": self.stats.errors[-5:],
        }
