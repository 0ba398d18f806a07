"""The ``list`` and ``gc`` subcommands: show claims, and remove unheld lock files."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import anyio

from ._cli_common import (
    CommandLineError,
    as_redis_registry,
    open_cli_registry,
    write_stdout,
)
from .registries import FileLockRegistry

if TYPE_CHECKING:
    import argparse

    from .registries import ClaimInfo, RedisClaimInfo, RedisRegistry, Registry

_FILE_HEADER = ["PORT", "PROTO", "PID", "APP_ID", "AGE", "HOLDER"]
_REDIS_HEADER = ["PORT", "PROTO", "PID", "HOST", "APP_ID", "AGE", "TOKEN", "EXPIRES"]
#: Maximum characters of an application id or host name in a table cell;
#: longer ones end in "...". JSON output keeps the whole value.
MAX_TEXT_WIDTH = 40
#: Maximum characters of a scope in a table cell.
MAX_SCOPE_WIDTH = 64
_TRUNCATION_MARK = "..."
# Characters that a table cell shows as Python's short escapes.
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def list_command(args: argparse.Namespace) -> int:
    """Print the claims of the selected registry as a table or JSON."""
    return anyio.run(_list, args)


async def _list(args: argparse.Namespace) -> int:
    async with open_cli_registry(args) as registry:
        redis_registry = as_redis_registry(registry)
        if redis_registry is not None:
            await _list_redis(args, redis_registry)
            return 0
        claims = _as_file_registry(registry).list_claims_now(all_scopes=args.all_scopes)
    if not args.all:
        claims = [info for info in claims if info.held]
    now = time.time()
    if args.json:
        fields = [_claim_fields(info, now) | {"path": info.location} for info in claims]
        _write(json.dumps(fields, indent=2))
    else:
        _write(_format_table(claims, now, show_scope=args.all_scopes))
    return 0


async def _list_redis(args: argparse.Namespace, registry: RedisRegistry) -> None:
    # Redis keeps a key only while its lease is held, so --all adds nothing.
    from .registries._redis import RedisClaimInfo

    listed = await registry.list_claims(all_scopes=args.all_scopes)
    claims = [info for info in listed if isinstance(info, RedisClaimInfo)]
    now = time.time()
    if args.json:
        fields = [_claim_fields(info, now) | _redis_fields(info) for info in claims]
        _write(json.dumps(fields, indent=2))
    else:
        _write(_format_redis_table(claims, now, show_scope=args.all_scopes))


def _as_file_registry(registry: Registry) -> FileLockRegistry:
    if not isinstance(registry, FileLockRegistry):
        msg = f"{registry!r} cannot be listed or cleaned; select a lock directory or a Redis server"
        raise CommandLineError(msg)
    return registry


def _claim_fields(info: ClaimInfo, now: float) -> dict[str, object]:
    record = info.record
    return {
        "port": info.key.port,
        "protocol": info.key.kind,
        "scope": info.key.scope,
        "held": info.held,
        "pid": record.pid if record else None,
        "app_id": record.app_id if record else None,
        "host": record.host if record else None,
        "container": record.container if record else None,
        "started": record.started if record else None,
        "age_seconds": round(now - record.started, 3) if record else None,
    }


def _redis_fields(info: RedisClaimInfo) -> dict[str, object]:
    return {
        "key": info.location,
        "fencing_token": info.fencing_token,
        "expires_in_seconds": info.expires_in,
    }


def _format_table(claims: list[ClaimInfo], now: float, *, show_scope: bool) -> str:
    header = list(_FILE_HEADER)
    if show_scope:
        header.append("SCOPE")
    rows = [header]
    for info in claims:
        record = info.record
        row = [
            str(info.key.port),
            info.key.kind,
            str(record.pid) if record else "-",
            _text_cell(record.app_id if record else None),
            _format_age(now - record.started) if record else "-",
            "alive" if info.held else "released",
        ]
        if show_scope:
            row.append(_text_cell(info.key.scope, MAX_SCOPE_WIDTH))
        rows.append(row)
    return _align(rows)


def _format_redis_table(
    claims: list[RedisClaimInfo], now: float, *, show_scope: bool
) -> str:
    header = list(_REDIS_HEADER)
    if show_scope:
        header.append("SCOPE")
    rows = [header]
    for info in claims:
        record = info.record
        row = [
            str(info.key.port),
            info.key.kind,
            str(record.pid) if record else "-",
            _text_cell(record.host if record else None),
            _text_cell(record.app_id if record else None),
            _format_age(now - record.started) if record else "-",
            "-" if info.fencing_token is None else str(info.fencing_token),
            "-" if info.expires_in is None else f"{info.expires_in:.1f}s",
        ]
        if show_scope:
            row.append(_text_cell(info.key.scope, MAX_SCOPE_WIDTH))
        rows.append(row)
    return _align(rows)


def _text_cell(text: str | None, limit: int = MAX_TEXT_WIDTH) -> str:
    """Render text read from a holder record as one printable table cell.

    Records come from other processes, so their text may hold line breaks
    or terminal escape sequences. Those characters, and the backslash, are
    shown as Python escapes (``\\n``, ``\\x1b``), and text longer than
    `limit` is cut to end in "...".
    """
    if not text:
        return "-"
    pieces = [_escape_character(character) for character in text]
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    shown: list[str] = []
    width = len(_TRUNCATION_MARK)
    for piece in pieces:
        width += len(piece)
        if width > limit:
            break
        shown.append(piece)
    return "".join(shown) + _TRUNCATION_MARK


def _escape_character(character: str) -> str:
    named = _NAMED_ESCAPES.get(character)
    if named is not None:
        return named
    if character.isprintable():
        return character
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    )


def _format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def gc_command(args: argparse.Namespace) -> int:
    """Remove unheld lock files; for Redis, explain that nothing needs removing."""
    return anyio.run(_gc, args)


async def _gc(args: argparse.Namespace) -> int:
    async with open_cli_registry(args) as registry:
        redis_registry = as_redis_registry(registry)
        if redis_registry is not None:
            if args.json:
                _write("[]")
            else:
                _write(
                    f"nothing to remove: a claim in Redis at {redis_registry.address} "
                    "expires by itself one lease after its holder stops renewing it "
                    f"(a lease is {redis_registry.lease:g} s with this URL's settings)"
                )
            return 0
        file_registry = _as_file_registry(registry)
    removed = file_registry.prune()
    if args.json:
        _write(json.dumps(removed, indent=2))
    else:
        _write(
            f"removed {len(removed)} unheld lock files from {file_registry.scope_dir()}"
        )
    return 0


def _write(text: str) -> None:
    write_stdout(text)
