"""The error hierarchy: one base, subclasses where callers act differently."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Reasons a candidate port can be rejected, in the order messages list them.
REJECTION_REASONS = ("in_use", "locked", "excluded", "validator")

_REASON_WORDS = {
    "in_use": "in use",
    "locked": "locked by another holder",
    "excluded": "excluded",
    "validator": "rejected by a validator",
}


class PortClaimError(OSError):
    """Base class of every error that aioportclaim raises on purpose.

    It extends `OSError`, so code that already catches socket errors around a
    server's start-up also catches failed claims.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidPortSpecError(PortClaimError, ValueError):
    """Raised for a port spec that cannot be parsed or names an impossible port.

    The message shows the rejected value and what forms are accepted.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, value: object) -> None:
        super().__init__(message)
        self.value = value


class PortExhaustedError(PortClaimError):
    """Raised when no candidate port could be claimed before the deadline.

    `rejections` maps each reason (``in_use``, ``locked``, ``excluded``,
    ``validator``) to the number of ports whose last rejection had that reason.

    .. versionadded:: 0.1
    """

    def __init__(
        self, message: str, rejections: Mapping[str, int] | None = None
    ) -> None:
        counts = dict.fromkeys(REJECTION_REASONS, 0)
        counts.update(rejections or {})
        summary = describe_rejections(counts)
        super().__init__(f"{message} ({summary})" if summary else message)
        self.rejections: dict[str, int] = counts


class ClaimTimeoutError(PortExhaustedError, TimeoutError):
    """Raised when one exact port stayed busy until the claim's timeout.

    It is a `PortExhaustedError` and a `TimeoutError`, so either handler
    catches it.

    .. versionadded:: 0.1
    """


class LockDirectoryError(PortClaimError):
    """Raised when the lock directory cannot be used safely.

    The message names the path and the fix: a symbolic link, a directory
    owned by another user, missing write permission or a full disk.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ClaimLostError(PortClaimError):
    """Raised when verification finds that a claim no longer holds.

    The lock was taken over, the socket was closed or lost its port, or
    another process listens on the same port in the other address family.
    A claim through Redis is also lost when its lease could not be renewed
    before it ran out (Redis down or unreachable, or the key deleted),
    because another holder may have the port by then.

    .. versionadded:: 0.1
    """


class HandoffError(PortClaimError):
    """Raised when the process that should bind a reserved port does not.

    `returncode` is the process's exit status when it exited before it
    listened, else None.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class ListenTimeoutError(HandoffError, TimeoutError):
    """Raised when the process did not listen on the reserved port in time.

    .. versionadded:: 0.1
    """


def describe_rejections(counts: Mapping[str, int]) -> str:
    """Render rejection counts as ``"3 in use, 1 locked by another holder"``."""
    parts = [
        f"{counts[reason]} {_REASON_WORDS[reason]}"
        for reason in REJECTION_REASONS
        if counts.get(reason)
    ]
    return ", ".join(parts)
