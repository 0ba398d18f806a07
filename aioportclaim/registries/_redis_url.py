"""Options of the Redis registry: URL parsing, checks, and the host identity."""

from __future__ import annotations

import math
import re
import socket
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Callable

Scope = Literal["host", "cluster"]

_MIN_LEASE = 0.05
_URL_SCHEMES = ("redis", "rediss", "unix")
_URL_OPTIONS = ("lease", "scope", "prefix", "host_id")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def host_identity() -> str:
    """Name this host for the ``"host"`` scope: its machine id, else its host name.

    Separate hosts have separate machine ids, while network namespace
    numbers repeat across hosts. Containers often share the machine id of
    their host or have none; pass ``host_id=`` to choose another name.
    """
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as file:
                text = file.read(256).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if _NAME.match(text):
            return text
    name = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:128]
    return name or "unknown-host"


def _split_url_options(url: str) -> tuple[str, dict[str, str]]:
    parts = _parse_url(url)
    if parts.scheme not in _URL_SCHEMES:
        msg = f"invalid Redis URL {_describe_url(url)!r}: expected a redis://, rediss:// or unix:// URL"
        raise ValueError(msg)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _URL_OPTIONS:
            ours[name] = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _parse_url(url: str) -> SplitResult:
    """Split `url`, or raise `ValueError` naming the URL when its address is invalid."""
    try:
        parts = urlsplit(url)
        if parts.scheme != "unix":
            _ = parts.port  # raises ValueError for a port that is not 0 to 65535
    except ValueError as error:
        msg = f"invalid Redis URL {_redact(url)!r}: {error}; expected redis://HOST:PORT, rediss://HOST:PORT or unix:///path/to/redis.sock"
        raise ValueError(msg) from None
    if parts.scheme == "unix" and not parts.path:
        msg = f"invalid Redis URL {_redact(url)!r}: missing the socket path; expected unix:///path/to/redis.sock"
        raise ValueError(msg)
    return parts


def _redact(url: str) -> str:
    """Drop the user name, password and query, for messages about URLs that do not parse."""
    without_query = url.partition("?")[0]
    return re.sub(r"//[^/]*@", "//", without_query, count=1)


def _describe_url(url: str) -> str:
    """Render a URL without credentials or query, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return f"{parts.scheme}://(invalid address)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path}"


def _pick(
    name: str,
    keyword_value: Any,
    options: dict[str, str],
    convert: Callable[[str], Any],
    default: Any,
) -> Any:
    if name not in options:
        return default if keyword_value is None else keyword_value
    text = options[name]
    try:
        from_url = convert(text)
    except ValueError:
        msg = f"invalid {name} {text!r} in the Redis URL"
        raise ValueError(msg) from None
    if keyword_value is not None and keyword_value != from_url:
        msg = f"{name} is {keyword_value!r} but the Redis URL sets {text!r}; set it in one place"
        raise ValueError(msg)
    return from_url


def _check_lease(lease: object) -> float:
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        msg = f"invalid lease {lease!r}: expected seconds as a number"
        raise TypeError(msg)
    if not (math.isfinite(lease) and lease >= _MIN_LEASE):
        msg = f"invalid lease {lease!r}: expected seconds, {_MIN_LEASE} or more"
        raise ValueError(msg)
    return float(lease)


def _check_scope(scope: object) -> Scope:
    if scope == "host":
        return "host"
    if scope == "cluster":
        return "cluster"
    msg = f"invalid scope {scope!r}: expected 'host' (one network namespace of one host) or 'cluster'"
    raise ValueError(msg)


def _check_name(option: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        msg = f"invalid {option} {value!r}: expected 1 to 128 letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    return value
