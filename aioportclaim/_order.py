"""Candidate order: weighted random walks over sorted port tuples, O(1) per step."""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

# Random generator of candidate orders for callers that pass no rng. A child
# process reseeds it after fork, so forked workers do not try ports in the
# same order.
default_rng = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=default_rng.seed)


@dataclass(frozen=True, slots=True)
class Plan:
    """The sorted port tuples that candidate order walks, computed once."""

    base_count: int
    allowed: tuple[int, ...]
    preferred: tuple[int, ...]
    # (weight, ports) pairs, highest weight first. The ports of a group are
    # allowed, sorted and in no other group.
    groups: tuple[tuple[float, tuple[int, ...]], ...]
    # Allowed ports that no preference covers.
    rest: tuple[int, ...]


def _stable_index(app_id: str, length: int) -> int:
    """Map `app_id` to an index below `length`, the same in every process."""
    digest = hashlib.sha256(app_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % length


def iterate_candidates(
    plan: Plan, app_id: str | None, rng: random.Random
) -> Iterator[int]:
    first: int | None = None
    if app_id is not None:
        pool = plan.preferred or plan.allowed
        if pool:
            first = pool[_stable_index(app_id, len(pool))]
            yield first
    if plan.groups:
        yield from _weighted_order(plan.groups, first, rng)
    yield from _permute(plan.rest, first, rng)


def _permute(
    ports: tuple[int, ...], skip: int | None, rng: random.Random
) -> Iterator[int]:
    """Yield `ports` in a random order, without `skip`, at O(1) cost per port.

    The order starts at a random index and steps by a random stride that is
    coprime with the length, so it visits every index exactly once without
    building a shuffled copy. Only length times phi(length) orders are
    possible, far fewer than a full shuffle gives, but enough to spread
    concurrent claimers over different ports.
    """
    length = len(ports)
    if not length:
        return
    # int(random() * n) is uniform enough here and costs a fraction of randrange.
    index = int(rng.random() * length)
    stride = _coprime_stride(length, rng)
    for _ in range(length):
        port = ports[index]
        if port != skip:
            yield port
        index += stride
        if index >= length:
            index -= length


def _coprime_stride(length: int, rng: random.Random) -> int:
    if length <= 2:
        return 1
    while True:
        stride = 1 + int(rng.random() * (length - 1))
        if math.gcd(stride, length) == 1:
            return stride


class _GroupState:
    __slots__ = ("ports", "remaining", "weight")

    def __init__(self, weight: float, remaining: int, ports: Iterator[int]) -> None:
        self.weight = weight
        self.remaining = remaining
        self.ports = ports


def _weighted_order(
    groups: tuple[tuple[float, tuple[int, ...]], ...],
    skip: int | None,
    rng: random.Random,
) -> Iterator[int]:
    """Yield the ports of all groups, each next port from a group chosen at random.

    A group is chosen with probability proportional to its weight times the
    number of its ports not yet yielded, so each remaining port's chance to
    come next is proportional to its weight.
    """
    live: list[_GroupState] = []
    for weight, ports in groups:
        remaining = len(ports)
        if skip is not None and _contains(ports, skip):
            remaining -= 1
        if remaining:
            live.append(_GroupState(weight, remaining, _permute(ports, skip, rng)))

    total = sum(group.weight * group.remaining for group in live)
    while len(live) > 1:
        point = rng.random() * total
        for chosen in live:
            point -= chosen.weight * chosen.remaining
            if point < 0:
                break
        # When rounding leaves point at or above zero after every group, the
        # loop ends on the last group, which still has ports left.
        chosen.remaining -= 1
        total -= chosen.weight
        yield next(chosen.ports)
        if not chosen.remaining:
            live.remove(chosen)
            total = sum(group.weight * group.remaining for group in live)
    if live:
        yield from live[0].ports


def _contains(ports: tuple[int, ...], port: int) -> bool:
    index = bisect.bisect_left(ports, port)
    return index < len(ports) and ports[index] == port
