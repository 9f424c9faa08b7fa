"""Burmester–Desmedt arithmetic over any :class:`~gridkey.crypto.groups.Group`.

Members M_0..M_{n-1} sit on a ring (indices mod n). With z_i = r_i·G and
X_i = r_i·(z_{i+1} − z_{i−1}), every member computes the same

    K = n·r_i·z_{i−1} + (n−1)·X_i + (n−2)·X_{i+1} + … + 1·X_{i+n−2} = (Σ_j r_j·r_{j+1})·G

using one scalar multiplication and 2(n−2) point additions (running sums), plus the scalar
multiplications for z_i and X_i: three in all. For n = 2, X_i is the identity and K = 2·r_i·z_{i−1}.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..crypto.groups import Element, Group, InvalidElement


def compute_x(group: Group, r: int, z_prev: Element, z_next: Element, n: int) -> Element | None:
    """X_i, or None for n = 2 (where it is the identity and not needed by anyone)."""
    if n == 2:
        return None
    diff = group.sub(z_next, z_prev)
    if group.is_identity(diff):
        raise InvalidElement("z_{i+1} equals z_{i-1}: degenerate round 1")
    return group.mult(r, diff)


def compute_key(group: Group, r: int, i: int, z_prev: Element, xs: Sequence[Element | None]) -> Element:
    """K from member i's view; ``xs`` are all n X values in ring order (None when n = 2)."""
    n = len(xs)
    k = group.mult(n * r % group.order, z_prev)
    if n == 2:
        return k
    acc = total = xs[i]
    for j in range(1, n - 1):
        acc = group.add(acc, xs[(i + j) % n])
        total = group.add(total, acc)
    k = group.add(k, total)
    if group.is_identity(k):
        raise InvalidElement("group key is the identity")
    return k


def expected_key(group: Group, rs: Sequence[int]) -> Element:
    """(Σ r_j·r_{j+1})·G from all secrets: for test vectors and tests, never for members."""
    n = len(rs)
    s = sum(rs[j] * rs[(j + 1) % n] for j in range(n)) % group.order
    return group.base_mult(s)
