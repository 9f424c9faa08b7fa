"""Gateway settings, with the embedded defaults `gridkey serve` starts with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    session_timeout_ms: int = 10_000  # a negotiation that has not committed by then is aborted
    # Each restart of a negotiation for the same epoch doubles its deadline, up to this: on a lossy
    # link (~10 % loss) the first deadline can pass before every retransmission lands, and a retry
    # with the same deadline would fail the same way.
    max_session_timeout_ms: int = 60_000
    join_window_ms: int = 300  # joins arriving within this window share one rekey
    default_suite: str = "GK1"
    default_mode: int = 0  # 0 end-to-end, 1 gateway-attested
    max_group_size: int = 1024
    tick_interval_ms: int = 200  # deadlines, batched joins and periodic rekeys are checked this often
    event_retention: int = 20_000  # events kept for late observers and SSE replays
    data_retention: int = 5_000  # relayed group data messages kept per group
    max_request_skew_ms: int = 300_000  # signed meter requests (enrol, rejoin) must be this fresh
    # A member of the current epoch that says (signed rejoin) it holds no key for it - it restarted,
    # or missed the Commit - gets a rekey, at most once per this interval per group: after a
    # fleet-wide power cut every meter asks, and one rekey answers them all.
    keyless_rekey_interval_ms: int = 30_000

    def session_timeout(self, attempt: int) -> int:
        """The deadline of a negotiation's ``attempt``-th restart (0: the first try)."""
        base = self.session_timeout_ms
        return min(base << min(attempt, 16), max(base, self.max_session_timeout_ms))
