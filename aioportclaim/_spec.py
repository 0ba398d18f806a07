"""Port specs: parse the forms that port-for accepts, with stricter checks.

A spec names one port, no port, any port, or a set of ports. The accepted
forms follow port-for's ``get_port`` dispatch, so code that migrates from it
keeps working. Unlike port-for, strings inside collections are parsed instead
of dropped, and every value that is not a valid spec raises
`InvalidPortSpecError` with the value in the message.

This module also matches glob patterns against ports (``"80*"``) and renders
port sets back in the ``"low-high"`` form.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeAlias

from ._exceptions import InvalidPortSpecError

MIN_PORT = 1
MAX_PORT = 65535

#: A ``(low, high)`` tuple, both ends inclusive.
PortRangeTuple: TypeAlias = tuple[int | str, int | str]
#: One item of a port collection: a port, a ``"low-high"`` or ``"a,b"``
#: string, a ``(low, high)`` tuple or a `range`.
PortSpecItem: TypeAlias = int | str | PortRangeTuple | range
#: Every form that `parse_port_spec` accepts, for type annotations.
PortSpecLike: TypeAlias = PortSpecItem | Collection[PortSpecItem] | None

_FORMS = (
    "accepted forms are a port from 1 to 65535, 'low-high', 'a,b,low-high', "
    "(low, high), range(start, stop), a list or set of these, -1 for no port, "
    "and None, 0 or an empty collection for any port"
)
_SET_FORMS = "pass a port, 'low-high', (low, high), a range or a list of these"
_PORT_BOUNDS = "ports run from 1 to 65535"
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# Numbers with more digits are reported without converting them, which keeps
# int() away from huge strings.
_MAX_DIGITS = 20

# The glob syntax of port patterns: digits, '*', '?', and bracket expressions
# of digits and digit ranges, negated with a leading '!'.
_GLOB_TOKEN = re.compile(r"[0-9]|\*|\?|\[!?(?:[0-9](?:-[0-9])?)+\]", re.ASCII)
_GLOB_HELP = "use digits, '*', '?' and brackets such as '[0-4]' or '[!7]'"

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 10


class _Problem(Exception):
    """What is wrong with a spec or one of its items, and how to fix it."""

    def __init__(self, problem: str, hint: str = _FORMS) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A parsed port spec.

    Attributes:
        kind: ``"exact"`` for one port, ``"none"`` for no port (``-1``),
            ``"any"`` for any port (``None``, ``0``, ``""`` or an empty
            collection), ``"set"`` for a range or collection of ports.
        port: The port when `kind` is ``"exact"``, else None.
        ports: The ports when `kind` is ``"exact"`` or ``"set"``, else empty.

    .. versionadded:: 0.1
    """

    kind: Literal["exact", "none", "any", "set"]
    port: int | None = None
    ports: frozenset[int] = frozenset()


_NO_PORT = PortSpec("none")
_ANY_PORT = PortSpec("any")


def parse_port_spec(spec: object) -> PortSpec:
    """Parse a port spec in any of the forms that port-for accepts.

    An int or numeric string from 1 to 65535 is one port. ``-1`` means no
    port. ``None``, ``0``, ``""`` and empty collections mean any port.
    ``(low, high)`` tuples and ``"low-high"`` strings are inclusive ranges,
    `range` objects exclude their stop, and strings may list items separated
    by commas. Lists, sets and frozensets may mix all of these.

    Raises:
        InvalidPortSpecError: The spec has an unsupported type, a bool, a
            float, a port outside 1 to 65535, a reversed or empty range, or a
            string that does not parse. The message shows the value.

    .. versionadded:: 0.1
    """
    return _parse_reporting(spec, "port spec")


def parse_port_set(spec: object, *, what: str = "ports") -> frozenset[int]:
    """Parse a spec that must name specific ports, and return those ports.

    One port gives a set of one. Specs that mean any port or no port raise,
    because callers that need a set (base ports, exclusions, preferences)
    cannot act on them. `what` names the role of the spec in the message,
    for example ``"excluded ports"``.

    Raises:
        InvalidPortSpecError: The spec is invalid, or means any port or no
            port.

    .. versionadded:: 0.1
    """
    parsed = _parse_reporting(spec, what)
    if parsed.kind == "any":
        problem = "this spec means any port, but specific ports are needed here"
        _raise(what, spec, _Problem(problem, _SET_FORMS))
    if parsed.kind == "none":
        problem = "-1 means no port, but specific ports are needed here"
        _raise(what, spec, _Problem(problem, _SET_FORMS))
    return parsed.ports


def describe_value(value: object) -> str:
    """Return the repr of a value, shortened when it is long."""
    return _repr.repr(value)


def format_ports(ports: Iterable[int], max_runs: int = 4) -> str:
    """Render ports as ``"1024-32767,61000-65535"``, shortened after `max_runs` runs."""
    runs: list[tuple[int, int]] = []
    for port in sorted(ports):
        if runs and runs[-1][1] == port - 1:
            runs[-1] = (runs[-1][0], port)
        else:
            runs.append((port, port))
    texts = [str(low) if low == high else f"{low}-{high}" for low, high in runs]
    if len(texts) > max_runs:
        texts[max_runs:] = [f"... (+{len(runs) - max_runs} more)"]
    return ",".join(texts)


def translate_port_pattern(pattern: object) -> str:
    """Check a port glob such as ``"80*"`` and translate it to a regular expression.

    The expression is meant for `re.fullmatch` on the decimal form of a port.

    Raises:
        TypeError: `pattern` is not a str.
        InvalidPortSpecError: `pattern` is empty or not a valid port glob.
    """
    if not isinstance(pattern, str):
        message = f"pattern must be a str, not {describe_value(pattern)}"
        raise TypeError(message)
    if not pattern:
        message = f"invalid port pattern '': the pattern is empty; {_GLOB_HELP}"
        raise InvalidPortSpecError(message, pattern)

    parts: list[str] = []
    position = 0
    while position < len(pattern):
        match = _GLOB_TOKEN.match(pattern, position)
        if match is None:
            message = _describe_glob_error(pattern, position)
            raise InvalidPortSpecError(message, pattern)
        token = match.group()
        position = match.end()
        if token == "*" and parts and parts[-1] == _ANY_DIGITS:
            # "**" matches what "*" does; keeping both makes the regular
            # expression backtrack exponentially in the number of stars.
            continue
        parts.append(_translate_glob_token(token))

    regex = "".join(parts)
    try:
        re.compile(regex)
    except re.error as error:
        message = f"invalid port pattern {pattern!r}: {error}; {_GLOB_HELP}"
        raise InvalidPortSpecError(message, pattern) from None
    return regex


def match_port_patterns(
    patterns: Iterable[str], ports: Iterable[int]
) -> frozenset[int]:
    """Return the ports whose decimal form matches at least one of the globs."""
    alternatives = "|".join(translate_port_pattern(pattern) for pattern in patterns)
    regex = re.compile(f"(?:{alternatives})")
    return frozenset(port for port in ports if regex.fullmatch(str(port)))


_ANY_DIGITS = "[0-9]*"


def _translate_glob_token(token: str) -> str:
    if token == "*":
        return _ANY_DIGITS
    if token == "?":
        return "[0-9]"
    if token.startswith("[!"):
        return f"[^{token[2:-1]}]"
    return token


def _describe_glob_error(pattern: str, position: int) -> str:
    character = pattern[position]
    if character == "[":
        problem = (
            f"the bracket at position {position} must contain digits or digit "
            "ranges and end with ']'"
        )
    else:
        problem = f"{character!r} at position {position} is not allowed"
    return f"invalid port pattern {pattern!r}: {problem}; {_GLOB_HELP}"


def _parse_reporting(spec: object, what: str) -> PortSpec:
    try:
        return _parse(spec)
    except _Problem as problem:
        _raise(what, spec, problem)


def _raise(what: str, spec: object, problem: _Problem) -> NoReturn:
    message = (
        f"invalid {what} {describe_value(spec)}: {problem.problem}; {problem.hint}"
    )
    raise InvalidPortSpecError(message, spec) from None


def _parse(spec: object) -> PortSpec:
    if spec is None:
        return _ANY_PORT
    if isinstance(spec, bool | float):
        _reject_type(spec)
    if isinstance(spec, int):
        return _parse_single(spec)
    if isinstance(spec, str):
        return _parse_text(spec)
    if isinstance(spec, range):
        return PortSpec("set", ports=_parse_range_object(spec))
    if isinstance(spec, tuple):
        if not spec:
            return _ANY_PORT
        return PortSpec("set", ports=_parse_range_tuple(spec))
    if isinstance(spec, list | set | frozenset):
        if not spec:
            return _ANY_PORT
        return PortSpec("set", ports=_parse_collection(spec))
    _reject_type(spec)


def _parse_single(number: int) -> PortSpec:
    if number == -1:
        return _NO_PORT
    if number == 0:
        return _ANY_PORT
    port = _check_port(number)
    return PortSpec("exact", port=port, ports=frozenset((port,)))


def _parse_text(text: str) -> PortSpec:
    stripped = text.strip()
    if not stripped:
        return _ANY_PORT
    if "," in stripped:
        return PortSpec("set", ports=_parse_comma_list(stripped))
    if _INTEGER.fullmatch(stripped):
        return _parse_single(_to_int(stripped))
    return PortSpec("set", ports=_parse_text_range(stripped))


def _parse_comma_list(text: str) -> frozenset[int]:
    ports: set[int] = set()
    for position, raw_item in enumerate(text.split(","), start=1):
        item = raw_item.strip()
        if not item:
            message = f"item {position} of the comma-separated list is empty"
            raise _Problem(message, "remove the extra comma")
        try:
            ports.update(_parse_text_item(item))
        except _Problem as problem:
            _reraise_in_item(problem, item, "comma-separated list")
    return frozenset(ports)


def _parse_text_item(item: str) -> range:
    """Parse ``"80"`` or ``"80-90"`` inside a comma list or collection."""
    if _INTEGER.fullmatch(item):
        port = _check_port_in_collection(_to_int(item))
        return range(port, port + 1)
    low, high = _split_text_range(item)
    return range(low, high + 1)


def _parse_text_range(text: str) -> frozenset[int]:
    low, high = _split_text_range(text)
    return frozenset(range(low, high + 1))


def _split_text_range(text: str) -> tuple[int, int]:
    low_text, separator, high_text = (part.strip() for part in text.partition("-"))
    if separator and _DIGITS.fullmatch(low_text + high_text):
        if not low_text or not high_text:
            missing = "start" if not low_text else "end"
            message = f"range {text!r} is missing its {missing}"
            raise _Problem(message, "write 'low-high'")
    if not _DIGITS.fullmatch(low_text) or not _DIGITS.fullmatch(high_text):
        message = f"{text!r} is not a port number or a 'low-high' range"
        raise _Problem(message)

    low = _check_port_in_collection(_to_int(low_text))
    high = _check_port_in_collection(_to_int(high_text))
    if low > high:
        message = f"range start {low} is greater than its end {high}"
        raise _Problem(message, "write 'low-high' with low <= high")
    return low, high


def _parse_range_tuple(value: tuple[object, ...]) -> frozenset[int]:
    return frozenset(_range_of_tuple(value))


def _range_of_tuple(value: tuple[object, ...]) -> range:
    if len(value) != 2:
        message = f"a range tuple needs 2 items (low, high), not {len(value)}"
        raise _Problem(message, "write (low, high) for an inclusive range")
    low = _parse_bound(value[0], "start")
    high = _parse_bound(value[1], "end")
    if low > high:
        message = f"range start {low} is greater than its end {high}"
        raise _Problem(message, "write (low, high) with low <= high")
    return range(low, high + 1)


def _parse_bound(bound: object, name: str) -> int:
    """Parse one end of a ``(low, high)`` tuple: an int or a numeric string."""
    if isinstance(bound, int) and not isinstance(bound, bool):
        return _check_port_in_collection(bound)
    if isinstance(bound, str) and _INTEGER.fullmatch(bound.strip()):
        return _check_port_in_collection(_to_int(bound.strip()))
    message = f"range {name} {describe_value(bound)} is not an int or a numeric string"
    raise _Problem(message, "write (low, high) with ports from 1 to 65535")


def _parse_range_object(value: range) -> frozenset[int]:
    return frozenset(_check_range_object(value))


def _check_range_object(value: range) -> range:
    if not value:
        message = f"{value!r} is empty"
        raise _Problem(message, "pass a range that contains at least one port")
    low, high = min(value[0], value[-1]), max(value[0], value[-1])
    if low < MIN_PORT:
        message = f"{value!r} contains {low}, which is not a port"
        raise _Problem(message, _PORT_BOUNDS)
    if high > MAX_PORT:
        message = f"{value!r} contains {high}, which is greater than {MAX_PORT}"
        raise _Problem(message, _PORT_BOUNDS)
    return value


def _parse_collection(
    values: list[object] | set[object] | frozenset[object],
) -> frozenset[int]:
    kind = type(values).__name__
    ports: set[int] = set()
    for item in values:
        try:
            ports.update(_parse_collection_item(item))
        except _Problem as problem:
            _reraise_in_item(problem, item, kind)
    return frozenset(ports)


def _parse_collection_item(item: object) -> range | frozenset[int]:
    if isinstance(item, bool | float):
        _reject_type(item)
    if isinstance(item, int):
        port = _check_port_in_collection(item)
        return range(port, port + 1)
    if isinstance(item, str):
        stripped = item.strip()
        if not stripped:
            message = "an empty string is not a port"
            raise _Problem(message, "remove it or write a port")
        if "," in stripped:
            return _parse_comma_list(stripped)
        return _parse_text_item(stripped)
    if isinstance(item, tuple):
        return _range_of_tuple(item)
    if isinstance(item, range):
        return _check_range_object(item)
    if isinstance(item, list | set | frozenset | dict):
        message = f"a nested {type(item).__name__} is not allowed"
        hint = "flatten it, because only (low, high) tuples may be nested"
        raise _Problem(message, hint)
    _reject_type(item)


def _reraise_in_item(problem: _Problem, item: object, kind: str) -> NoReturn:
    context = f"in item {describe_value(item)} of the {kind}, {problem.problem}"
    raise _Problem(context, problem.hint) from None


def _reject_type(value: object) -> NoReturn:
    if isinstance(value, bool):
        message = f"{value!r} is a bool, not a port"
        raise _Problem(message, "pass an int from 1 to 65535")
    if isinstance(value, float):
        message = f"{value!r} is a float, but ports are integers"
        raise _Problem(message, "pass an int from 1 to 65535")
    if value is None:
        message = "None means any port, which a collection cannot contain"
        raise _Problem(message, _PORT_BOUNDS)
    message = f"type {type(value).__name__} is not a port spec"
    raise _Problem(message)


def _to_int(digits: str) -> int:
    """Convert text that matches ``-?[0-9]+`` to an int."""
    length = len(digits.removeprefix("-").lstrip("0"))
    if length > _MAX_DIGITS:
        message = f"a number with {length} digits is not a port"
        raise _Problem(message, _PORT_BOUNDS)
    return int(digits)


def _check_port(number: int) -> int:
    if number < 0:
        message = f"port {number} is negative"
        raise _Problem(message, "use -1 for no port, or a port from 1 to 65535")
    if number > MAX_PORT:
        message = f"port {number} is greater than {MAX_PORT}"
        raise _Problem(message, _PORT_BOUNDS)
    return number


def _check_port_in_collection(number: int) -> int:
    """Check a port inside a range or collection, where 0 and -1 are invalid."""
    if number == 0:
        message = "port 0 means any port, which a range or collection cannot contain"
        raise _Problem(message, _PORT_BOUNDS)
    if number == -1:
        message = "-1 means no port, which a range or collection cannot contain"
        raise _Problem(message, _PORT_BOUNDS)
    return _check_port(number)
