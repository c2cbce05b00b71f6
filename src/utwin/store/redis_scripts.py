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

A device's flush floors live in its own hash, under the field `floors`
(topic fields are always 7 bytes, so it never meets one), so that they move
with its topics when a slot moves: entries of u8 scope length | scope (b""
for the device, the u32 uE, or the topic's 7-byte field) | 16-byte floor.
The device's topic count is its HLEN less that field.

Versions (bytes 2..17 of a topic value, and floors) are compared as four
unsigned big-endian 32-bit numbers (`struct.unpack`, exact in Lua's doubles),
which is byte order. Never with Lua's `<` on strings: it follows the locale's
collation. The four numbers cost the server about a quarter less per entry
than a loop over bytes.
"""

from __future__ import annotations

import hashlib

FLOORS_FIELD = b"floors"

# Lua helpers shared by the scripts (the text is put at the top of each).
_COMPARE = """
local function version_of(value)
  local version = string.sub(value, 2, 17)
  if #version < 16 then version = version .. string.rep('\\0', 16 - #version) end
  return version
end
local function compare(a, b)
  local a1, a2, a3, a4 = struct.unpack('>I4I4I4I4', a)
  local b1, b2, b3, b4 = struct.unpack('>I4I4I4I4', b)
  if a1 ~= b1 then return a1 > b1 and 1 or -1 end
  if a2 ~= b2 then return a2 > b2 and 1 or -1 end
  if a3 ~= b3 then return a3 > b3 and 1 or -1 end
  if a4 ~= b4 then return a4 > b4 and 1 or -1 end
  return 0
end
local function floor_over(floors, field)
  local highest = nil
  local at = 1
  while at <= #floors do
    local size = string.byte(floors, at)
    local floor = string.sub(floors, at + 1 + size, at + 16 + size)
    if string.sub(floors, at + 1, at + size) == string.sub(field, 1, size)
        and (highest == nil or compare(floor, highest) > 0) then
      highest = floor
    end
    at = at + 17 + size
  end
  return highest
end
local function raise_floor(floors, scope, floor)
  local kept = {}
  local at = 1
  while at <= #floors do
    local size = string.byte(floors, at)
    local entry = string.sub(floors, at, at + 16 + size)
    if string.sub(floors, at + 1, at + size) == scope then
      local current = string.sub(entry, 2 + size)
      if compare(current, floor) > 0 then floor = current end
    else
      kept[#kept + 1] = entry
    end
    at = at + 17 + size
  end
  kept[#kept + 1] = string.char(#scope) .. scope .. floor
  return table.concat(kept)
end
"""

# ARGV: max topics per device, the change feed's channel ('' for none), the writer's id (16 bytes),
# then per device: key, entry count, then field, value per entry.
# One verdict letter per entry: Stored, Duplicate, Older, device Full, fLushed, or R (not served:
# unwritten), and '!' after them if the node refused to publish. With a channel, the STORED entries
# are published there in one MessagePack array (see `redis_feed`): cmsgpack packs it in C, where
# building the bytes in Lua (a struct.pack per entry) cost the node about 60% more per put, not <10%.
PUT_SOURCE = (
    "#!lua flags=allow-cross-slot-keys\n"
    + _COMPARE
    + """
local limit, channel = tonumber(ARGV[1]), ARGV[2]
local feed = channel ~= ''
local verdicts = {}
local published, n = {ARGV[3]}, 1  -- the feed message's items, and how many
local at = 4
while at <= #ARGV do
  local key, count = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  if type(redis.pcall('EXISTS', key)) == 'table' then
    for _ = 1, count do verdicts[#verdicts + 1] = 'R' end
    at = at + 2 * count
  else
    local topics, floors = nil, nil
    local head_at, changed = n + 1, 0
    if feed then  -- the device's key and count, once the count is known
      published[n + 1], published[n + 2], n = key, 0, n + 2
    end
    for _ = 1, count do
      local field, value = ARGV[at], ARGV[at + 1]
      at = at + 2
      local stored = redis.call('HGET', key, field)
      local verdict = 'S'
      if stored then
        local order = compare(version_of(value), version_of(stored))
        if order == 0 then verdict = 'D' elseif order < 0 then verdict = 'O' end
      else
        if topics == nil then
          floors = redis.call('HGET', key, 'floors')
          topics = redis.call('HLEN', key) - (floors and 1 or 0)
        end
        local floor = floors and floor_over(floors, field)
        if floor and compare(version_of(value), floor) <= 0 then
          verdict = 'L'
        elseif topics >= limit then
          verdict = 'F'
        else
          topics = topics + 1
        end
      end
      if verdict == 'S' then
        redis.call('HSET', key, field, value)
        if feed then
          changed = changed + 1
          published[n + 1], published[n + 2], n = field, value, n + 2
        end
      end
      verdicts[#verdicts + 1] = verdict
    end
    if changed > 0 then
      published[head_at + 1] = changed
    elseif feed then
      published[head_at], published[head_at + 1], n = nil, nil, n - 2
    end
  end
end
-- A refused PUBLISH (the user lacks the channel) must not fail a call whose writes are done:
-- one more letter after the verdicts tells the caller.
if n > 1 and type(redis.pcall('PUBLISH', channel, cmsgpack.pack(published))) == 'table' then
  verdicts[#verdicts + 1] = '!'
end
return table.concat(verdicts)
"""
)

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

# ARGV: key, field per topic (a first round of reads, one call per node, no key declared).
# Per topic its value (nil where none), or 0 when this node does not serve its device.
GET_TOPICS_SOURCE = """#!lua flags=allow-cross-slot-keys,no-writes
local values = {}
local last_key, served = nil, false
for at = 1, #ARGV, 2 do
  local key = ARGV[at]
  if key ~= last_key then
    last_key, served = key, type(redis.pcall('EXISTS', key)) ~= 'table'
  end
  if served then
    values[#values + 1] = redis.call('HGET', key, ARGV[at + 1])
  else
    values[#values + 1] = 0
  end
end
return values
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

# ARGV: floor, whether to raise each topic's own floor first (1) or not (0), then per device:
# key, field count, then the fields. Removes the fields whose value is floor or older.
# Per device: how many of its topics were removed, or -1 when this node does not serve it.
FLUSH_SOURCE = (
    "#!lua flags=allow-cross-slot-keys\n"
    + _COMPARE
    + """
local floor, raise = ARGV[1], ARGV[2] == '1'
local replies = {}
local at = 3
while at <= #ARGV do
  local key, count = ARGV[at], tonumber(ARGV[at + 1])
  local removed = -1
  if type(redis.pcall('EXISTS', key)) ~= 'table' then
    removed = 0
    if raise then
      local floors = redis.call('HGET', key, 'floors') or ''
      for i = 1, count do floors = raise_floor(floors, ARGV[at + 1 + i], floor) end
      redis.call('HSET', key, 'floors', floors)
    end
    for i = 1, count do
      local field = ARGV[at + 1 + i]
      local stored = redis.call('HGET', key, field)
      if stored and compare(version_of(stored), floor) <= 0 then
        removed = removed + redis.call('HDEL', key, field)
      end
    end
  end
  replies[#replies + 1] = removed
  at = at + 2 + count
end
return replies
"""
)

# KEYS[1]: the device; ARGV: floor, scope (b"" for the device, or a u32 uE). Raises that floor.
FLOOR_SOURCE = (
    "#!lua\n"
    + _COMPARE
    + """
local floors = redis.call('HGET', KEYS[1], 'floors') or ''
redis.call('HSET', KEYS[1], 'floors', raise_floor(floors, ARGV[2], ARGV[1]))
return 1
"""
)

# KEYS[1]: the device. How many topics it holds (its fields less the floors).
COUNT_SOURCE = """#!lua flags=no-writes
return redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], 'floors')
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
GET_TOPICS = Script(GET_TOPICS_SOURCE)
DELETE = Script(DELETE_SOURCE)
DEVICE_READ = Script(DEVICE_READ_SOURCE)
FLUSH = Script(FLUSH_SOURCE)
FLOOR = Script(FLOOR_SOURCE)
COUNT = Script(COUNT_SOURCE)
