"""A Dolev–Yao attacker as a UDP proxy between CoAP clients and a CoAP server.

Clients talk to ``127.0.0.1:proxy.port``; the proxy forwards each client's datagrams to the server
from an upstream socket of its own (one per client address, so the server sees distinct peers and
its replies route back to the right client). On the way, in each direction independently, the
attacker controls the network as in the Dolev–Yao model:

- **drop** a datagram;
- **duplicate** it (the copy follows 0–50 ms later);
- **delay** it by 5–200 ms, which reorders it relative to later traffic;
- **tamper**: flip one random bit, either anywhere or in the last 80 bytes (where COSE signatures,
  group elements and MAC tags sit), then forward it;
- **replay** a random earlier datagram seen in that direction from *any* client, 50–1000 ms later,
  to a random peer (client→server replays leave through a random client's upstream socket);
- **inject** forged datagrams at a Poisson rate: random bytes, random CBOR wrapped in a valid CoAP
  header for a real path (e.g. ``/gk/groups/<g>/rounds``), or a real recent datagram's header (same
  token, so it can hit a live exchange or observation) carrying a forged payload and sometimes a
  forged error code (4.00/4.03/4.04).

Tokens and message IDs travel in clear text (no DTLS/OSCORE), so the proxy also records Observe
registrations and each client's latest message ID (:meth:`UdpProxy.observations`,
:meth:`UdpProxy.last_mids`) and can send targeted forgeries to a client or, spoofing a client's
address, to the server (:meth:`UdpProxy.send_to_client`, :meth:`UdpProxy.send_as_client`).

Every decision comes from one seeded :class:`random.Random`, so a run's attacks are repeatable up
to the timing of the traffic they act on. ``counters`` counts every action per direction
(``"c2s.tamper"``, ``"s2c.drop"``, ...). With all probabilities zero (:data:`PASSTHROUGH`) the proxy
is a plain relay.

The proxy runs its own asyncio loop in a daemon thread (:meth:`UdpProxy.start` /
:meth:`UdpProxy.stop`); :meth:`UdpProxy.configure` changes the fault profile while it runs.
"""

from __future__ import annotations

import asyncio
import copy
import random
import socket
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiocoap
import cbor2
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

Addr = tuple[str, int]
C2S = "c2s"  # client -> server
S2C = "s2c"  # server -> client
HISTORY = 512  # datagrams remembered per direction for replays and header reuse
TAIL = 80  # "signature region": the last bytes of a datagram


@dataclass(frozen=True)
class Faults:
    """Per-direction attack probabilities (per datagram) and an injection rate (per second)."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    tamper: float = 0.0
    replay: float = 0.0
    inject_per_s: float = 0.0


PASSTHROUGH = Faults()


def random_cbor(rng: random.Random, depth: int = 0) -> Any:
    """A random CBOR-able value; sometimes shaped like a COSE_Sign1 (tag 18) or an inbox item."""
    roll = rng.random()
    leaf = depth >= 3 or roll < 0.45
    if leaf:
        kind = rng.randrange(8)
        if kind == 0:
            return rng.randint(-(2**64), 2**64)
        if kind == 1:
            return rng.randbytes(rng.choice((0, 1, 8, 16, 32, 64, 65)))
        if kind == 2:
            return "".join(rng.choice("abcdefgh-_0123456789é€") for _ in range(rng.randrange(12)))
        if kind == 3:
            return rng.choice((True, False, None))
        if kind == 4:
            return rng.choice((0.0, -1.5, float("inf"), float("nan"), 1e300))
        if kind == 5:
            return rng.choice(("s", "d", "start", "bundle1", "bundle2", "commit", "abort"))
        if kind == 6:
            return rng.randrange(24)
        return b""
    if roll < 0.6:
        return [random_cbor(rng, depth + 1) for _ in range(rng.randrange(6))]
    if roll < 0.75:
        return {random_cbor(rng, 3): random_cbor(rng, depth + 1) for _ in range(rng.randrange(5))}
    if roll < 0.9:  # COSE_Sign1-looking: [protected bstr, unprotected map, payload, signature]
        protected = cbor2.dumps({1: rng.choice((-8, -7, 0))})
        unprotected = {4: rng.randbytes(rng.choice((1, 4, 8)))}
        payload = cbor2.dumps([random_cbor(rng, depth + 1) for _ in range(rng.randrange(2, 8))])
        return cbor2.CBORTag(18, [protected, unprotected, payload, rng.randbytes(64)])
    return ["s", rng.randbytes(32), rng.choice(("start", "bundle1", "commit")), random_cbor(rng, depth + 1)]


def flip_bit(data: bytes, rng: random.Random, tail_only: bool) -> bytes:
    """``data`` with one bit flipped, anywhere or within the last :data:`TAIL` bytes."""
    if not data:
        return data
    lo = max(0, len(data) - TAIL) if tail_only else 0
    i = rng.randrange(lo, len(data))
    out = bytearray(data)
    out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


class UdpProxy:
    """A seeded, configurable Dolev–Yao UDP proxy in front of one server (see the module docstring)."""

    def __init__(
        self,
        upstream: Addr,
        *,
        c2s: Faults = PASSTHROUGH,
        s2c: Faults = PASSTHROUGH,
        seed: int = 0,
        inject_paths: Sequence[Sequence[str]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.faults = {C2S: c2s, S2C: s2c}
        self.rng = random.Random(seed)
        self.inject_paths = [tuple(p) for p in inject_paths]
        self.host = host
        self.counters: Counter[str] = Counter()
        self.port = port  # 0: any free port (see start)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listen: socket.socket | None = None
        self._upstreams: dict[Addr, socket.socket] = {}  # client address -> its upstream socket
        self._injector: socket.socket | None = None  # an attacker-owned peer address for injections
        self._history: dict[str, deque[bytes]] = {C2S: deque(maxlen=HISTORY), S2C: deque(maxlen=HISTORY)}
        self._tasks: list[asyncio.Task] = []
        self._ready = threading.Event()
        self._observations: dict[tuple[Addr, bytes], tuple[str, ...]] = {}  # (client, token) -> Uri-Path
        self._last_mid: dict[Addr, int] = {}  # client -> message ID of its latest CON/NON request

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> UdpProxy:
        """Bind the listening socket (``.port``) and run the proxy's loop in a daemon thread."""
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.bind((self.host, self.port))
        self._listen.setblocking(False)
        self.port = self._listen.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="udp-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy loop did not start")
        return self

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None and self._listen is not None
        asyncio.set_event_loop(loop)
        loop.add_reader(self._listen.fileno(), self._on_client_readable)
        self._injector = self._upstream_socket()
        loop.add_reader(self._injector.fileno(), self._drain, self._injector)
        self._tasks = [loop.create_task(self._inject_loop(C2S)), loop.create_task(self._inject_loop(S2C))]
        self._ready.set()
        loop.run_forever()
        for t in self._tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
        for sock in [self._listen, self._injector, *self._upstreams.values()]:
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        loop.close()

    def stop(self) -> None:
        """Stop the loop (pending delayed datagrams are dropped) and close every socket."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def configure(self, *, c2s: Faults | None = None, s2c: Faults | None = None) -> None:
        """Change the fault profile of one or both directions (takes effect at the next datagram)."""
        if c2s is not None:
            self.faults[C2S] = c2s
        if s2c is not None:
            self.faults[S2C] = s2c

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of the counters (read on the proxy's loop)."""
        if self._loop is None or not self._loop.is_running():
            return dict(self.counters)

        async def copy() -> dict[str, int]:
            return dict(self.counters)

        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(10)

    def observations(self) -> list[tuple[Addr, bytes, tuple[str, ...]]]:
        """Observe registrations seen on the wire: (client address, token, Uri-Path)."""
        if self._loop is None or not self._loop.is_running():
            return [(c, t, p) for (c, t), p in self._observations.items()]

        async def copy() -> list[tuple[Addr, bytes, tuple[str, ...]]]:
            return [(c, t, p) for (c, t), p in self._observations.items()]

        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(10)

    def last_mids(self) -> dict[Addr, int]:
        """Each client's latest request message ID (clients count them up: the next ones are predictable)."""
        assert self._loop is not None

        async def copy() -> dict[Addr, int]:
            return dict(self._last_mid)

        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(10)

    def send_as_client(self, client: Addr, data: bytes) -> None:
        """Targeted forgery: send ``data`` to the server from ``client``'s upstream address (spoofing it)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._send, C2S, data, self._upstreams[client], client)

    def send_to_client(self, client: Addr, data: bytes) -> None:
        """Targeted forgery: send ``data`` to ``client`` as if the server had sent it."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._send, S2C, data, None, client)

    def attacks(self) -> int:
        """How many active attacks (tamper, replay, inject) were carried out so far."""
        snap = self.snapshot()
        return sum(v for k, v in snap.items() if k.split(".")[1] in ("tamper", "replay", "inject"))

    # --- sockets ----------------------------------------------------------------------------

    def _upstream_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        sock.connect(self.upstream)
        sock.setblocking(False)
        return sock

    def _on_client_readable(self) -> None:
        assert self._listen is not None and self._loop is not None
        while True:
            try:
                data, addr = self._listen.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["c2s.recv_error"] += 1
                return
            up = self._upstreams.get(addr)
            if up is None:
                up = self._upstream_socket()
                self._upstreams[addr] = up
                self._loop.add_reader(up.fileno(), self._on_server_readable, up, addr)
            self._note_observation(data, addr)
            self._handle(C2S, data, up, addr)

    def _note_observation(self, data: bytes, client: Addr) -> None:
        """Remember message IDs and Observe registrations (clear text without DTLS/OSCORE)."""
        if len(data) < 4:
            return
        if data[0] >> 6 == 1 and (data[0] >> 4) & 3 in (0, 1) and 1 <= data[1] <= 31:  # a CON/NON request
            self._last_mid[client] = int.from_bytes(data[2:4], "big")
        if data[1] != int(Code.GET):
            return
        try:
            msg = aiocoap.Message.decode(data)
        except Exception:
            return
        if msg.opt.observe == 0:
            self._observations[(client, msg.token)] = tuple(msg.opt.uri_path)

    def _on_server_readable(self, up: socket.socket, client: Addr) -> None:
        while True:
            try:
                data = up.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable while the server restarts
                self.counters["s2c.recv_error"] += 1
                return
            self._handle(S2C, data, up, client)

    def _drain(self, sock: socket.socket) -> None:
        """Read and discard what the server answers to injections from the injector socket."""
        while True:
            try:
                sock.recv(65535)
                self.counters["s2c.injector_reply"] += 1
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return

    def _send(self, direction: str, data: bytes, up: socket.socket | None, client: Addr) -> None:
        try:
            if direction == C2S:
                assert up is not None
                up.send(data)
            else:
                assert self._listen is not None
                self._listen.sendto(data, client)
            self.counters[f"{direction}.sent"] += 1
        except OSError:
            self.counters[f"{direction}.send_error"] += 1

    def _later(self, delay_s: float, direction: str, data: bytes, up: socket.socket | None, client: Addr) -> None:
        assert self._loop is not None
        self._loop.call_later(delay_s, self._send, direction, data, up, client)

    # --- the attacker -----------------------------------------------------------------------

    def _handle(self, direction: str, data: bytes, up: socket.socket, client: Addr) -> None:
        f = self.faults[direction]
        rng = self.rng
        self.counters[f"{direction}.seen"] += 1
        self._history[direction].append(data)
        if f.replay and rng.random() < f.replay:
            self._replay(direction)
        if f.drop and rng.random() < f.drop:
            self.counters[f"{direction}.drop"] += 1
            return
        if f.tamper and rng.random() < f.tamper:
            data = flip_bit(data, rng, tail_only=rng.random() < 0.5)
            self.counters[f"{direction}.tamper"] += 1
        if f.duplicate and rng.random() < f.duplicate:
            self.counters[f"{direction}.duplicate"] += 1
            self._later(rng.uniform(0.0, 0.05), direction, data, up, client)
        if f.delay and rng.random() < f.delay:
            self.counters[f"{direction}.delay"] += 1
            self._later(rng.uniform(0.005, 0.2), direction, data, up, client)
        else:
            self._send(direction, data, up, client)

    def _random_peer(self) -> tuple[socket.socket, Addr] | None:
        if not self._upstreams:
            return None
        client = self.rng.choice(list(self._upstreams))
        return self._upstreams[client], client

    def _replay(self, direction: str) -> None:
        """Re-send an earlier datagram (from any client) to a random peer, 50–1000 ms from now."""
        history = self._history[direction]
        peer = self._random_peer()
        if not history or peer is None:
            return
        data = history[self.rng.randrange(len(history))]
        self.counters[f"{direction}.replay"] += 1
        self._later(self.rng.uniform(0.05, 1.0), direction, data, *peer)

    async def _inject_loop(self, direction: str) -> None:
        while True:
            rate = self.faults[direction].inject_per_s
            if rate <= 0:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(min(self.rng.expovariate(rate), 5.0))
            if self.faults[direction].inject_per_s <= 0:
                continue
            try:
                self._inject(direction)
            except Exception:  # a forging bug must not stop the attacker
                self.counters[f"{direction}.inject_error"] += 1

    def _inject(self, direction: str) -> None:
        rng = self.rng
        peer = self._random_peer()
        if direction == C2S:
            up, client = peer if peer is not None and rng.random() < 0.7 else (self._injector, ("", 0))
            assert up is not None
        elif peer is None:
            return
        else:
            up, client = peer
        roll = rng.random()
        history = self._history[direction]
        if roll < 0.3:
            data = rng.randbytes(rng.randrange(1, 300))
        elif roll < 0.65 and history:
            data = self._forge_from(history[rng.randrange(len(history))])
        else:
            data = self._forge_fresh(direction)
        self.counters[f"{direction}.inject"] += 1
        self._send(direction, data, up, client)

    def _forge_fresh(self, direction: str) -> bytes:
        """A valid CoAP header for a real path (requests) or a plausible response, CBOR payload."""
        rng = self.rng
        if direction == C2S:
            path = rng.choice(self.inject_paths) if self.inject_paths else ("gk", "gateway")
            code = rng.choice((Code.POST, Code.POST, Code.GET, Code.PUT, Code.DELETE, Code.FETCH))
            msg = aiocoap.Message(code=code, uri_path=path)
            msg.mtype = rng.choice((Type.CON, Type.NON))
        else:
            code = rng.choice((Code.CONTENT, Code.CHANGED, Code.CREATED, Code.FORBIDDEN, Code.NOT_FOUND))
            msg = aiocoap.Message(code=code)
            msg.mtype = rng.choice(list(Type))
            if rng.random() < 0.5:
                msg.opt.observe = rng.randrange(1 << 24)
        msg.mid = rng.randrange(0x10000)
        msg.token = rng.randbytes(rng.randrange(9))
        msg.payload = cbor2.dumps(random_cbor(rng))
        return msg.encode()

    def _forge_from(self, real: bytes) -> bytes:
        """A real datagram's header (token, options) with a new message id and a forged body.

        Server-to-client forgeries sometimes also carry a forged error code (4.03, 4.04): CoAP
        without DTLS/OSCORE does not authenticate codes, so an on-path attacker can say "forbidden"
        on the server's behalf, on a live exchange or observation.
        """
        rng = self.rng
        try:
            orig = aiocoap.Message.decode(real)
        except Exception:
            return flip_bit(real, rng, tail_only=False)
        code = orig.code
        if code.is_response() and rng.random() < 0.2:
            code = rng.choice((Code.FORBIDDEN, Code.NOT_FOUND, Code.BAD_REQUEST))
        msg = aiocoap.Message(code=code)
        msg.mtype = orig.mtype
        msg.mid = rng.randrange(0x10000)
        msg.token = orig.token
        msg.opt = copy.deepcopy(orig.opt)
        if msg.opt.observe is not None:
            msg.opt.observe = (msg.opt.observe + rng.randrange(1, 100)) % (1 << 24)
        if rng.random() < 0.5 and orig.payload:
            body = bytearray(orig.payload)  # the real payload, corrupted in a few places
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            msg.payload = bytes(body)
        else:
            msg.payload = cbor2.dumps(random_cbor(rng))
        return msg.encode()
