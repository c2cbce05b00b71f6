"""The Lua scripts of the Redis Cluster record store (`redis_records`), each atomic on one node.

A tag's records are a hash (key -> value) and a sorted set of the same keys,
all at score 0, so that ZRANGEBYLEX gives them in byte order; its version is
a counter, and its lease a string key holding the holder's token. All four
keys share the tag, so they live in one slot. A call names them in ARGV; a
call of one tag also declares one of them in KEYS, so that the cluster
redirects it (MOVED, ASK) before running it, as `redis_scripts` explains.
"""

from __future__ import annotations

from utwin.store.redis_scripts import Script

# ARGV: hash, zset, version key, lease key, lease token ('' for none), channel ('' for none),
# writer id, tag, then key, value, b"1" (put) or b"0" (delete) per op, applied in order.
# The new version; -1 when a token was given and the lease no longer holds it (nothing written).
# What it publishes: writer (16) | u32 tag length | tag | u64 version | per op:
# put flag (1 byte "1"/"0") | u32 key length | key | u32 value length | value.
WRITE_SOURCE = """#!lua flags=allow-cross-slot-keys
local hash, zset, version_key, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local token, channel = ARGV[5], ARGV[6]
if token ~= '' and redis.call('GET', lease) ~= token then
  return -1
end
local parts = {ARGV[7], struct.pack('>I4', #ARGV[8]), ARGV[8], ''}
for at = 9, #ARGV, 3 do
  local key, value, put = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  if put == '1' then
    redis.call('HSET', hash, key, value)
    redis.call('ZADD', zset, 0, key)
  else
    redis.call('HDEL', hash, key)
    redis.call('ZREM', zset, key)
  end
  parts[#parts + 1] = put .. struct.pack('>I4', #key) .. key .. struct.pack('>I4', #value) .. value
end
local version = redis.call('INCR', version_key)
parts[4] = struct.pack('>I4I4', math.floor(version / 4294967296), version % 4294967296)
if channel ~= '' then
  redis.pcall('PUBLISH', channel, table.concat(parts))
end
return version
"""

# ARGV: zset, then key, b"1" (add) or b"0" (remove) per entry. Keys only: a listing.
LIST_SOURCE = """#!lua flags=allow-cross-slot-keys
local zset = ARGV[1]
for at = 2, #ARGV, 2 do
  if ARGV[at + 1] == '1' then
    redis.call('ZADD', zset, 0, ARGV[at])
  else
    redis.call('ZREM', zset, ARGV[at])
  end
end
return 1
"""

# ARGV per tag: hash, key count, keys. Per tag: its values (false where none), or 0 when this
# node does not serve the tag (its slot moved).
READ_SOURCE = """#!lua flags=allow-cross-slot-keys,no-writes
local replies = {}
local at = 1
while at <= #ARGV do
  local hash, count = ARGV[at], tonumber(ARGV[at + 1])
  if type(redis.pcall('EXISTS', hash)) == 'table' then
    replies[#replies + 1] = 0
  else
    replies[#replies + 1] = redis.call('HMGET', hash, unpack(ARGV, at + 2, at + 1 + count))
  end
  at = at + 2 + count
end
return replies
"""

# ARGV: zset, hash, lowest (ZRANGEBYLEX form), highest, count, b"1" to read values.
# {keys, values} of the next keys in order (values empty when not asked).
SCAN_SOURCE = """#!lua flags=allow-cross-slot-keys,no-writes
local keys = redis.call('ZRANGEBYLEX', ARGV[1], ARGV[3], ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
local values = {}
if ARGV[6] == '1' and #keys > 0 then
  values = redis.call('HMGET', ARGV[2], unpack(keys))
end
return {keys, values}
"""

# ARGV: lease key, token, lease ms, version key. {1, version} when taken, {0, 0} when held by another.
ACQUIRE_SOURCE = """#!lua flags=allow-cross-slot-keys
if redis.call('SET', ARGV[1], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then
  return {1, tonumber(redis.call('GET', ARGV[4]) or '0')}
end
return {0, 0}
"""

# ARGV: lease key, token, lease ms. 1 when renewed, 0 when the token no longer holds it.
RENEW_SOURCE = """#!lua flags=allow-cross-slot-keys
if redis.call('GET', ARGV[1]) == ARGV[2] then
  redis.call('PEXPIRE', ARGV[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""

# ARGV: lease key, token. 1 when released, 0 when the token no longer held it.
RELEASE_SOURCE = """#!lua flags=allow-cross-slot-keys
if redis.call('GET', ARGV[1]) == ARGV[2] then
  redis.call('DEL', ARGV[1])
  return 1
end
return 0
"""

# ARGV: version key. The tag's version (0 before its first write).
VERSION_SOURCE = """#!lua flags=allow-cross-slot-keys,no-writes
return tonumber(redis.call('GET', ARGV[1]) or '0')
"""

WRITE = Script(WRITE_SOURCE)
LIST = Script(LIST_SOURCE)
READ = Script(READ_SOURCE)
SCAN = Script(SCAN_SOURCE)
ACQUIRE = Script(ACQUIRE_SOURCE)
RENEW = Script(RENEW_SOURCE)
RELEASE = Script(RELEASE_SOURCE)
VERSION = Script(VERSION_SOURCE)
