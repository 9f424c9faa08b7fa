"""An in-memory network for one coordinator and n members (tests, benchmarks, test vectors).

Still sans-IO: delivery is a FIFO queue in this process, time is a number you pass in. Hooks let
a test play the Dolev–Yao attacker on every hop: each hook gets the bytes in flight and returns
the list of byte strings to deliver instead (``[]`` drops, ``[d, d]`` duplicates, a modified copy
tampers, extra items inject).
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..crypto.groups import Rng
from ..crypto.identity import Revocation
from ..crypto.rng import SeededRng
from ..crypto.signatures import SigningKey
from ..crypto.suite import Suite
from .coordinator import CoordinatorSession
from .directory import KeyDirectory
from .events import Aborted, Broadcast, Committed, KeyEstablished, Send
from .keyschedule import EpochKeys
from .member import GroupMember, MemberIdentity
from .messages import Mode
from .policy import MemberPolicy

Hook = Callable[[str, bytes], list[bytes]]


def _identity(member_id: str, data: bytes) -> list[bytes]:
    return [data]


@dataclass
class RunResult:
    coordinator: Committed | Aborted | None
    keys: dict[str, EpochKeys]  # member id -> keys, for members that committed
    member_results: dict[str, KeyEstablished | Aborted | None]
    member_cpu_ns: dict[str, int]
    coordinator_cpu_ns: int
    member_msg_sizes: list[int]
    broadcast_sizes: dict[str, int]
    bytes_to_coordinator: int
    bytes_from_coordinator: int  # counted once per recipient (unicast fan-out)
    drops: Counter = field(default_factory=Counter)

    @property
    def agree(self) -> bool:
        """Every member committed, all hold the same key id, and it is the one the coordinator committed."""
        if not isinstance(self.coordinator, Committed) or len(self.keys) != len(self.member_results):
            return False
        ids = {k.key_id for k in self.keys.values()}
        keys = {k.aead_key for k in self.keys.values()}
        return ids == {self.coordinator.key_id} and len(keys) == 1


class Loopback:
    """A coordinator and members wired together in memory, with attacker hooks on every hop."""

    def __init__(
        self,
        suite: Suite,
        member_ids: Sequence[str],
        *,
        seed: bytes | str | int = 0,
        mode: Mode = Mode.E2E,
        timeout_ms: int = 10_000,
        rng: Rng | None = None,
        policy: MemberPolicy | None = None,
        crl: bool = True,
    ) -> None:
        """``policy``: the members' (default: they accept ``mode``). ``crl``: a CA publishes an empty
        CRL at each run's ``now`` (False: members never get one, as when a gateway withholds it)."""
        self.suite = suite
        self.mode = mode
        self.crl = crl
        self.timeout_ms = timeout_ms
        seeded = SeededRng(seed)
        self.rng = rng or seeded.fork("coordinator-session")
        self.coordinator_key: SigningKey = suite.generate_signing_key(seeded.fork("coordinator"))
        self.identities = {
            mid: MemberIdentity(mid, suite.generate_signing_key(seeded.fork(f"id:{mid}"))) for mid in member_ids
        }
        self.directory = KeyDirectory()
        for ident in self.identities.values():
            self.directory.add(ident.member_id, ident.signing_key.public_key)
        self.members = {
            mid: GroupMember(
                suite=suite,
                me=ident,
                group_id="grp-1",
                coordinator_keys=[self.coordinator_key.public_key],
                directory=self.directory,
                rng=rng or seeded.fork(f"eph:{mid}"),
                policy=policy or MemberPolicy(modes=frozenset({mode})),
            )
            for mid, ident in self.identities.items()
        }
        self.epoch = 0
        self.session: CoordinatorSession | None = None
        self._crl_number = 0
        if crl:
            self._publish_crl(1_700_000_000_000)

    def _publish_crl(self, now: int) -> None:
        """An empty CRL issued at ``now``, valid for a day (what a CA would publish)."""
        self._crl_number += 1
        self.directory.apply_revocation(Revocation(now, now + 86_400_000, self._crl_number))

    def run_epoch(
        self,
        *,
        now: int = 1_700_000_000_000,
        participants: Sequence[str] | None = None,
        to_member: Hook = _identity,
        to_coordinator: Hook = _identity,
        attempt: int = 0,
        epoch: int | None = None,
        offline: Sequence[str] = (),
        shuffle: random.Random | None = None,
    ) -> RunResult:
        """Run one negotiation to completion (or to its deadline) and report what happened.

        ``shuffle`` delivers in-flight messages in a random order instead of FIFO (reordering).
        """
        ids = list(participants) if participants is not None else list(self.identities)
        self.epoch = epoch if epoch is not None else self.epoch + 1
        if self.crl:
            self._publish_crl(now)
        pt = time.process_time_ns
        t0 = pt()
        cs = CoordinatorSession(
            suite=self.suite,
            signing_key=self.coordinator_key,
            group_id="grp-1",
            epoch=self.epoch,
            members=[(m, self.identities[m].signing_key.public_key) for m in ids],
            now=now,
            mode=self.mode,
            timeout_ms=self.timeout_ms,
            attempt=attempt,
            rng=self.rng,
        )
        coord_ns = pt() - t0
        self.session = cs
        member_ns: Counter[str] = Counter()
        results: dict[str, KeyEstablished | Aborted | None] = {m: None for m in ids}
        sizes: list[int] = []
        bsizes: dict[str, int] = {}
        up = down = 0
        drops: Counter[str] = Counter()
        queue: deque[tuple[str, bytes]] = deque()  # (destination, data); "" is the coordinator

        def broadcast(data: bytes, kind: str) -> None:
            nonlocal down
            bsizes[kind] = len(data)
            for m in ids:
                if m in offline:
                    continue
                for d in to_member(m, data):
                    down += len(d)
                    queue.append((m, d))

        broadcast(cs.start_message, "start")
        while queue:
            if shuffle is not None:
                queue.rotate(-shuffle.randrange(len(queue)))
            dest, data = queue.popleft()
            if dest == "":
                t0 = pt()
                events = cs.receive(data, now)
                coord_ns += pt() - t0
                for ev in events:
                    if isinstance(ev, Broadcast):
                        broadcast(ev.data, ev.kind)
                    elif hasattr(ev, "reason") and not isinstance(ev, Aborted):
                        drops[f"coordinator:{ev.reason}"] += 1
                continue
            member = self.members[dest]
            t0 = pt()
            events = member.receive(data, now)
            member_ns[dest] += pt() - t0
            for ev in events:
                if isinstance(ev, Send):
                    sizes.append(len(ev.data))
                    for d in to_coordinator(dest, ev.data):
                        up += len(d)
                        queue.append(("", d))
                elif isinstance(ev, KeyEstablished | Aborted):
                    results[dest] = ev
                elif hasattr(ev, "reason"):
                    drops[f"member:{ev.reason}"] += 1
        if not cs.is_terminal:  # nothing left in flight: let the deadline pass
            later = cs.deadline + 1
            for ev in cs.tick(later):
                if isinstance(ev, Broadcast):
                    broadcast(ev.data, ev.kind)
            while queue:
                dest, data = queue.popleft()
                if dest:
                    for ev in self.members[dest].receive(data, later):
                        if isinstance(ev, KeyEstablished | Aborted):
                            results[dest] = ev
        keys = {m: r.keys for m, r in results.items() if isinstance(r, KeyEstablished)}
        return RunResult(
            coordinator=cs.result,
            keys=keys,
            member_results=results,
            member_cpu_ns=dict(member_ns),
            coordinator_cpu_ns=coord_ns,
            member_msg_sizes=sizes,
            broadcast_sizes=bsizes,
            bytes_to_coordinator=up,
            bytes_from_coordinator=down,
            drops=drops,
        )
