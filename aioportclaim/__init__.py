"""Claim network ports without races, on asyncio and trio.

A claim picks a port by a strategy, takes a cross-process lock for it,
binds the socket at once and hands the still-bound socket to the server.

`RedisRegistry` needs the optional coredis client (``pip install
'aioportclaim[redis]'``). It loads on first access, and it is left out of
``__all__`` so that ``from aioportclaim import *`` works without coredis;
import it by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._claim import claim_port, open_claim
from ._claimer import PortClaimer
from ._exceptions import (
    ClaimLostError,
    ClaimTimeoutError,
    HandoffError,
    InvalidPortSpecError,
    ListenTimeoutError,
    LockDirectoryError,
    PortClaimError,
    PortExhaustedError,
)
from ._getport import get_port, get_port_sync
from ._handoff import PortReservation, reserve_port
from ._selector import RobustPortSelector
from ._spec import parse_port_spec
from ._strategy import WELL_KNOWN_SERVICE_PORTS, PortSelectionStrategy
from ._system import FALLBACK_PORT_RANGE, default_candidate_ports
from .registries import (
    ClaimInfo,
    ClaimKey,
    FileLockRegistry,
    HolderRecord,
    Lease,
    MemoryRegistry,
    Registry,
    open_registry,
)

if TYPE_CHECKING:
    # The redundant alias marks the name as exported for type checkers.
    from .registries import RedisRegistry as RedisRegistry

__version__ = "0.1.0"

__all__ = [
    "FALLBACK_PORT_RANGE",
    "WELL_KNOWN_SERVICE_PORTS",
    "ClaimInfo",
    "ClaimKey",
    "ClaimLostError",
    "ClaimTimeoutError",
    "FileLockRegistry",
    "HandoffError",
    "HolderRecord",
    "InvalidPortSpecError",
    "Lease",
    "ListenTimeoutError",
    "LockDirectoryError",
    "MemoryRegistry",
    "PortClaimError",
    "PortClaimer",
    "PortExhaustedError",
    "PortReservation",
    "PortSelectionStrategy",
    "Registry",
    "RobustPortSelector",
    "claim_port",
    "default_candidate_ports",
    "get_port",
    "get_port_sync",
    "open_claim",
    "open_registry",
    "parse_port_spec",
    "reserve_port",
]

# Tracebacks and reprs show the public module, not the private one.
for _name in __all__:
    _object = globals()[_name]
    if getattr(_object, "__module__", "").startswith("aioportclaim."):
        try:
            _object.__module__ = "aioportclaim"
        except (AttributeError, TypeError):
            pass
del _name, _object


def __getattr__(name: str) -> Any:
    # RedisRegistry needs coredis, the optional extra aioportclaim[redis].
    if name == "RedisRegistry":
        from .registries._redis import RedisRegistry

        RedisRegistry.__module__ = "aioportclaim"
        globals()[name] = RedisRegistry
        return RedisRegistry
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
