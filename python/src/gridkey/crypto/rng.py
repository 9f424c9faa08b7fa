"""Randomness as an input: the protocol core never reads the OS RNG itself.

Production callers pass :func:`system_rng`; tests, benchmarks and test vectors pass a
:class:`SeededRng` so that every run is reproducible.
"""

from __future__ import annotations

import hashlib
import os


def system_rng(n: int) -> bytes:
    return os.urandom(n)


class SeededRng:
    """Deterministic byte stream: SHAKE-256(label || seed || counter). Never use in production."""

    def __init__(self, seed: bytes | str | int, label: bytes = b"GridKey test rng") -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(16, "big", signed=True)
        elif isinstance(seed, str):
            seed = seed.encode()
        self._prefix = label + b"\x00" + seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._prefix + self._counter.to_bytes(8, "big")).digest(n)

    def fork(self, name: str) -> SeededRng:
        """An independent stream for a sub-party (e.g. one member), stable under reordering."""
        return SeededRng(self._prefix + b"/" + name.encode(), label=b"GridKey test rng fork")
