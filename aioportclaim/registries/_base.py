"""The registry protocol: where claims are recorded, and the holder record."""

from __future__ import annotations

import json
import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio

from .._system import container_id, host_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._metrics_base import MetricsRecorder

Kind = Literal["tcp", "udp"]

#: Holder records are read from files and keys that other processes write,
#: so they are size-limited before parsing.
MAX_RECORD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ClaimKey:
    """Key of a registry lock: one port of one protocol in one network scope.

    .. versionadded:: 0.1
    """

    scope: str
    kind: Kind
    port: int


@dataclass(frozen=True, slots=True)
class HolderRecord:
    """Holder of a claim, as stored beside the lock for later listing.

    .. versionadded:: 0.1
    """

    pid: int
    kind: str
    port: int
    app_id: str | None = None
    host: str = field(default_factory=host_name)
    container: str | None = field(default_factory=container_id)
    started: float = field(default_factory=time.time)

    @classmethod
    def for_this_process(cls, kind: str, port: int, app_id: str | None) -> HolderRecord:
        """Describe a claim that this process is about to take."""
        return cls(pid=os.getpid(), kind=kind, port=port, app_id=app_id)

    def to_bytes(self) -> bytes:
        """Serialize the record as compact JSON."""
        fields = {
            "pid": self.pid,
            "kind": self.kind,
            "port": self.port,
            "app_id": self.app_id,
            "host": self.host,
            "container": self.container,
            "started": self.started,
        }
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> HolderRecord | None:
        """Parse a record written by another process, or return None if it is malformed.

        The input is untrusted: oversized data, wrong types and out-of-range
        numbers give None instead of an exception.
        """
        if not data or len(data) > MAX_RECORD_BYTES:
            return None
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(raw, dict):
            return None
        return _record_from_mapping(raw)


def _record_from_mapping(raw: dict[str, Any]) -> HolderRecord | None:
    pid, kind, port = raw.get("pid"), raw.get("kind"), raw.get("port")
    started = raw.get("started")
    if not (isinstance(pid, int) and isinstance(port, int) and isinstance(kind, str)):
        return None
    if isinstance(pid, bool) or isinstance(port, bool):
        return None
    if not (0 < pid < 2**31 and 0 < port <= 65535 and kind in ("tcp", "udp")):
        return None
    if not (isinstance(started, int | float) and math.isfinite(started)):
        return None

    texts = {name: raw.get(name) for name in ("app_id", "host", "container")}
    if not all(value is None or isinstance(value, str) for value in texts.values()):
        return None
    return HolderRecord(
        pid=pid,
        kind=kind,
        port=port,
        app_id=texts["app_id"],
        host=texts["host"] or "",
        container=texts["container"],
        started=float(started),
    )


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    """One entry of a registry listing.

    `held` is True while a live holder owns the lock. `record` is the last
    holder record found, or None when there is none or it was malformed.

    .. versionadded:: 0.1
    """

    key: ClaimKey
    held: bool
    record: HolderRecord | None
    location: str


class Lease(ABC):
    """A registry lock that this process holds on one `ClaimKey`.

    .. versionadded:: 0.1
    """

    key: ClaimKey

    @abstractmethod
    async def is_held(self) -> bool:
        """Check that the lock is still ours."""

    @abstractmethod
    async def release(self) -> None:
        """Give the lock back. Calling it again does nothing."""

    def try_release_now(self) -> bool:
        """Release without awaiting if this lease can; return whether it did.

        Local leases release at once, which keeps the claim path free of
        checkpoints; remote ones return False and are released by `release`.
        """
        return False

    @property
    def fencing_token(self) -> int | None:
        """Number from a counter that grows with every new holder, or None.

        A store that the holder writes to can reject writes that carry a
        lower token than the highest it has seen, so a holder whose lease
        ran out cannot overwrite the work of the next one. Registries that
        issue no tokens (file locks, memory) return None.

        .. versionadded:: 0.1
        """
        return None

    @property
    def lost_reason(self) -> str | None:
        """Why the registry found this lease lost, or None while it holds.

        Only leases that a background task renews (Redis) are ever lost:
        renewal failed for a whole lease, another holder took the key over,
        or the registry was closed while the lease was held.

        .. versionadded:: 0.1
        """
        return None

    def on_lost(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Register `callback` to be called once with the reason if this lease is lost.

        A lease that is already lost calls it at once. Otherwise it runs in
        the registry's renewal task, so it must return quickly; exceptions
        are logged, not raised. Returns a function that unregisters it.
        Leases that cannot be lost never call it.

        .. versionadded:: 0.1
        """
        return _do_nothing

    async def wait_lost(self) -> str:
        """Wait until this lease is lost and return why; leases that cannot be lost wait forever.

        .. versionadded:: 0.1
        """
        event = anyio.Event()
        unregister = self.on_lost(lambda _reason: event.set())
        try:
            await event.wait()
        finally:
            unregister()
        return self.lost_reason or "the lease was lost"


def _do_nothing() -> None:
    pass


class Registry(ABC):
    """Where claims live: a store that grants one lease per `ClaimKey`.

    `try_acquire` never waits for a busy key: it returns None, and the caller
    moves on to the next candidate or polls.

    .. versionadded:: 0.1
    """

    #: Short name for logs and metrics.
    name: str = "registry"
    #: Recorder that claims through this registry report to when they name
    #: none themselves; None leaves them to the process-wide default (see
    #: `aioportclaim.metrics`). Registries take it as their ``metrics=``
    #: argument.
    #:
    #: .. versionadded:: 0.1
    metrics: MetricsRecorder | None = None

    @abstractmethod
    def scope(self) -> str:
        """Name the network scope in which this registry's keys are unique."""

    @abstractmethod
    async def try_acquire(self, key: ClaimKey, holder: HolderRecord) -> Lease | None:
        """Take the lock for `key` and record `holder`, or return None if it is taken."""

    @abstractmethod
    async def list_claims(self) -> list[ClaimInfo]:
        """List the claims this registry has recorded, held or left behind."""

    def is_held_here(self, kind: str, port: int) -> bool:
        """Tell, without I/O, whether this process already holds `port` here.

        Selectors use it to skip their own claims cheaply, which keeps a
        claim fast when this process already holds most of a range. False
        means "not known to be held", not "free".
        """
        return False
