"""Rate limiting for log messages that repeat, such as a busy port polled again and again."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Hashable, Mapping

#: Seconds between two records of the same message and key.
DEFAULT_INTERVAL = 10.0
#: Keys remembered at once. Past this, the oldest key is forgotten.
DEFAULT_MAX_KEYS = 1024


class RepeatLimiter:
    """Log the first record of each (message, key) pair, then at most one per interval.

    Records of the same message and key that come within `interval` seconds
    of the last one logged are dropped and counted. The next record after
    the interval is logged with `` (N similar messages suppressed in the
    last S s)`` appended and ``repeated`` = N in its extra fields. The
    first record of a key has ``repeated`` = 0. Suppressed records that no
    later record follows are never reported. Levels that `logger` does not
    log are neither logged nor counted.

    Safe to share between threads. `clock` returns seconds and defaults to
    `time.monotonic`.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if not interval >= 0:
            msg = f"invalid interval {interval!r}: expected seconds, 0 or more"
            raise ValueError(msg)
        if max_keys < 1:
            msg = f"invalid max_keys {max_keys!r}: expected 1 or more"
            raise ValueError(msg)
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, Hashable], _Window] = {}

    def log(
        self,
        level: int,
        msg: str,
        *args: object,
        key: Hashable = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Log `msg` % `args` at `level` unless the same message and key were logged within the interval."""
        if not self.logger.isEnabledFor(level):
            return
        suppressed, elapsed = self._admit((msg, key))
        if suppressed < 0:
            return
        fields = dict(extra or {})
        fields["repeated"] = suppressed
        if suppressed:
            msg += " (%d similar messages suppressed in the last %.1f s)"
            args = (*args, suppressed, elapsed)
        self.logger.log(level, msg, *args, extra=fields, stacklevel=2)

    def _admit(self, window_key: tuple[str, Hashable]) -> tuple[int, float]:
        # Returns (-1, 0.0) to drop the record, else the number of records
        # dropped before it and the seconds since the last one logged.
        now = self._clock()
        with self._lock:
            window = self._windows.get(window_key)
            if window is None:
                if len(self._windows) >= self.max_keys:
                    del self._windows[next(iter(self._windows))]
                self._windows[window_key] = _Window(now)
                return 0, 0.0
            if now - window.logged_at < self.interval:
                window.dropped += 1
                return -1, 0.0
            dropped, elapsed = window.dropped, now - window.logged_at
            window.logged_at, window.dropped = now, 0
            return dropped, elapsed


class _Window:
    __slots__ = ("dropped", "logged_at")

    def __init__(self, logged_at: float) -> None:
        self.logged_at = logged_at
        self.dropped = 0


def log_fields(
    port: int | None,
    kinds: tuple[str, ...],
    app_id: str | None,
    registry: object,
) -> dict[str, object]:
    """Return the extra fields that every claim log record carries."""
    return {
        "port": port,
        "protocol": "+".join(kinds),
        "app_id": app_id,
        "registry": getattr(registry, "name", type(registry).__name__),
    }
