"""A registry inside one process, for tests and single-process applications."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .._system import network_scope
from ._base import ClaimInfo, ClaimKey, HolderRecord, Lease, Registry

if TYPE_CHECKING:
    from .._metrics_base import MetricsRecorder


class MemoryLease(Lease):
    """An entry in a `MemoryRegistry` table."""

    __slots__ = ("_registry", "key")

    def __init__(self, registry: MemoryRegistry, key: ClaimKey) -> None:
        self.key = key
        self._registry: MemoryRegistry | None = registry

    async def is_held(self) -> bool:
        registry = self._registry
        return registry is not None and registry.holder_of(self.key) is self

    async def release(self) -> None:
        self.try_release_now()

    def try_release_now(self) -> bool:
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.forget(self)
        return True


class MemoryRegistry(Registry):
    """Claims in a table of this process only.

    Other processes do not see these claims, but the bind still fails for a
    port that another process holds, so a claim stays correct; only
    reservations without a socket are visible to this process alone.
    Claims through this registry that name no recorder report to `metrics`.

    .. versionadded:: 0.1
    """

    name = "memory"

    def __init__(self, *, metrics: MetricsRecorder | None = None) -> None:
        self.metrics = metrics
        self._scope = network_scope()
        self._leases: dict[ClaimKey, tuple[MemoryLease, HolderRecord]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryRegistry({len(self._leases)} held)"

    def scope(self) -> str:
        return self._scope

    async def try_acquire(self, key: ClaimKey, holder: HolderRecord) -> Lease | None:
        with self._lock:
            if key in self._leases:
                return None
            lease = MemoryLease(self, key)
            self._leases[key] = (lease, holder)
        return lease

    async def list_claims(self) -> list[ClaimInfo]:
        with self._lock:
            entries = sorted(
                self._leases.items(), key=lambda item: (item[0].port, item[0].kind)
            )
        return [ClaimInfo(key, True, record, "memory") for key, (_, record) in entries]

    def is_held_here(self, kind: str, port: int) -> bool:
        return ClaimKey(self._scope, kind, port) in self._leases  # type: ignore[arg-type]

    def holder_of(self, key: ClaimKey) -> MemoryLease | None:
        """Return the lease that holds `key`, if any."""
        entry = self._leases.get(key)
        return entry[0] if entry else None

    def forget(self, lease: MemoryLease) -> None:
        """Drop `lease` from the table if it is still the holder of its key."""
        with self._lock:
            entry = self._leases.get(lease.key)
            if entry is not None and entry[0] is lease:
                del self._leases[lease.key]
