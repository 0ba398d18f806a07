"""The Lua scripts of the Redis registry, and the key and value format they share.

A claim key is ``<prefix>:claim:<scope>:<kind>:<port>``.
"""

from __future__ import annotations

from ._base import MAX_RECORD_BYTES, ClaimKey, HolderRecord

# A value is "v1 <claim id> <fencing token> <holder record JSON>".
_VERSION = "v1"
_MAX_VALUE_BYTES = MAX_RECORD_BYTES + 128

# KEYS: claim key, fencing counter. ARGV: "v1 <claim id> ", holder record,
# lease in ms. Returns the fencing token as a string, or nil when taken.
# A retried request whose first reply was lost finds its own claim id and
# succeeds again, so the client's retries never turn a claim into "taken".
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 1, #ARGV[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return string.match(current, '^%S+ %S+ (%d+) ')
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
if token == 1 then
  -- A new or emptied server: start from its clock in microseconds, so
  -- tokens keep growing across a restart that lost the counter.
  local now = redis.call('TIME')
  token = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[2], string.format('%d', token))
end
local text = string.format('%d', token)
redis.call('SET', KEYS[1], ARGV[1] .. text .. ' ' .. ARGV[2], 'PX', ARGV[3])
return text
"""

# KEYS: claim key. ARGV: "v1 <claim id> ", lease in ms. Returns 1 if extended.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: claim key. ARGV: "v1 <claim id> ". Returns 1 if deleted.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: claim keys found by SCAN. ARGV: largest value to return, in bytes.
# Returns value, PTTL for each key. Anyone who can write to Redis can write
# these keys, so a value is nil unless it is a string within the limit.
_READ = """
local result = {}
for _, key in ipairs(KEYS) do
  local value = false
  if redis.call('TYPE', key).ok == 'string'
      and redis.call('STRLEN', key) <= tonumber(ARGV[1]) then
    value = redis.call('GET', key)
  end
  result[#result + 1] = value
  result[#result + 1] = redis.call('PTTL', key)
end
return result
"""


def _parse_key(name: str, head: str) -> ClaimKey | None:
    if not name.startswith(head):
        return None
    parts = name[len(head) :].rsplit(":", 2)
    if len(parts) != 3:
        return None
    scope, kind, port_text = parts
    if not scope or kind not in ("tcp", "udp"):
        return None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    port = int(port_text)
    if not 0 < port <= 65535:
        return None
    return ClaimKey(scope, "tcp" if kind == "tcp" else "udp", port)


def _parse_value(value: object) -> tuple[int | None, HolderRecord | None]:
    if not isinstance(value, bytes | str):
        return None, None
    data = _as_bytes(value)
    if len(data) > _MAX_VALUE_BYTES:
        return None, None
    parts = data.split(b" ", 3)
    if len(parts) != 4 or parts[0] != _VERSION.encode():
        return None, None
    token_text = parts[2]
    if not (token_text.isdigit() and len(token_text) <= 19):
        return None, None
    return int(token_text), HolderRecord.from_bytes(parts[3])


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b""
