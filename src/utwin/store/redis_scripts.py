"""The Lua scripts of the Redis Cluster store, each decided atomically on one node.

A call names its devices' hash keys in ARGV, not KEYS, so that one call may
cover every device a node serves (flag `allow-cross-slot-keys`: Redis 7.0
rejects declared keys of several slots, but lets a script reach keys of any
slot its node serves). A call of one device also declares its key in KEYS,
so that the cluster answers it with MOVED, ASK or TRYAGAIN before running it.

Each script first probes each device key with `redis.pcall`: a key this node
does not serve now (its slot moved, or is moving and the key is gone) is an
error reply there, and the script marks that device "not served" and writes
nothing of it; every device it does serve is decided and written. So a
script never stops half-way through a device, and the caller resends only
the devices marked.

Versions (bytes 2..17 of a topic value) are compared as four unsigned
big-endian 32-bit numbers (`struct.unpack`, exact in Lua's doubles), which is
byte order; a value too short for that is compared byte by byte. Never with
Lua's `<` on strings: it follows the locale's collation. The four numbers cost
the server about a quarter less per entry than a loop over bytes.
"""

from __future__ import annotations

import hashlib

# ARGV: max topics per device, then per device: key, entry count, then field, value per entry.
# One verdict letter per entry: Stored, Duplicate, Older, device Full, or R (not served: unwritten).
PUT_SOURCE = """#!lua flags=allow-cross-slot-keys
local limit = tonumber(ARGV[1])
local verdicts = {}
local at = 2
while at <= #ARGV do
  local key, count = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  local topics = redis.pcall('HLEN', key)
  if type(topics) == 'table' then
    for _ = 1, count do verdicts[#verdicts + 1] = 'R' end
    at = at + 2 * count
  else
    for _ = 1, count do
      local field, value = ARGV[at], ARGV[at + 1]
      at = at + 2
      local stored = redis.call('HGET', key, field)
      local verdict = 'S'
      if stored then
        verdict = 'D'
        if #value >= 17 and #stored >= 17 then
          local new1, new2, new3, new4 = struct.unpack('>I4I4I4I4', value, 2)
          local old1, old2, old3, old4 = struct.unpack('>I4I4I4I4', stored, 2)
          if new1 ~= old1 then verdict = new1 > old1 and 'S' or 'O'
          elseif new2 ~= old2 then verdict = new2 > old2 and 'S' or 'O'
          elseif new3 ~= old3 then verdict = new3 > old3 and 'S' or 'O'
          elseif new4 ~= old4 then verdict = new4 > old4 and 'S' or 'O'
          end
        else
          for b = 2, 17 do
            local new, old = string.byte(value, b) or -1, string.byte(stored, b) or -1
            if new ~= old then
              verdict = new > old and 'S' or 'O'
              break
            end
          end
        end
      elseif topics >= limit then
        verdict = 'F'
      else
        topics = topics + 1
      end
      if verdict == 'S' then redis.call('HSET', key, field, value) end
      verdicts[#verdicts + 1] = verdict
    end
  end
end
return table.concat(verdicts)
"""

# ARGV per device: key, field count, then the fields.
# Per device: its values in order (nil where none), or 0 when this node does not serve it.
GET_SOURCE = """#!lua flags=allow-cross-slot-keys,no-writes
local replies = {}
local at = 1
while at <= #ARGV do
  local key, count = ARGV[at], tonumber(ARGV[at + 1])
  if type(redis.pcall('EXISTS', key)) == 'table' then
    replies[#replies + 1] = 0
  else
    local values = {}
    for i = 1, count do values[i] = redis.call('HGET', key, ARGV[at + 1 + i]) end
    replies[#replies + 1] = values
  end
  at = at + 2 + count
end
return replies
"""

# ARGV per device: key, entry count, then field, version per entry.
# Per device: how many of its topics were deleted, or -1 when this node does not serve it.
DELETE_SOURCE = """#!lua flags=allow-cross-slot-keys
local replies = {}
local at = 1
while at <= #ARGV do
  local key, count = ARGV[at], tonumber(ARGV[at + 1])
  local removed = -1
  if type(redis.pcall('EXISTS', key)) ~= 'table' then
    removed = 0
    for i = 0, count - 1 do
      local field, version = ARGV[at + 2 + 2 * i], ARGV[at + 3 + 2 * i]
      local stored = redis.call('HGET', key, field)
      if stored and string.sub(stored, 2, 17) == version then
        removed = removed + redis.call('HDEL', key, field)
      end
    end
  end
  replies[#replies + 1] = removed
  at = at + 2 + 2 * count
end
return replies
"""

# One read-only command (ARGV[1]) on one device's hash (KEYS[1]): redirected by the cluster like the others.
DEVICE_READ_SOURCE = "#!lua flags=no-writes\nreturn redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))"


class Script:
    """A Lua script and its SHA1, for EVALSHA with a SCRIPT LOAD when a node answers NOSCRIPT."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


PUT = Script(PUT_SOURCE)
GET = Script(GET_SOURCE)
DELETE = Script(DELETE_SOURCE)
DEVICE_READ = Script(DEVICE_READ_SOURCE)
