"""The Redis tier's Lua scripts: each runs atomically in Redis, on Redis' clock.

Keys (see :mod:`corral.worker.kvstore.redis_tier`): the LRU sorted set of blob keys scored
by last use, the blob sizes, the pointer lists per blob, the byte total, blobs and pointers.
"""

from __future__ import annotations

#: ``now``: Redis' clock in microseconds, and never at or below the newest last use in the
#: LRU (KEYS[1]), so that uses are ordered as Redis ran them even within a microsecond.
#: Lua numbers are doubles: exact for microsecond times; ``us`` writes them without exponent.
CLOCK = """
local function us(x) return string.format('%d', x) end
local function clock(lru)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = redis.call('ZRANGE', lru, -1, -1, 'WITHSCORES')[2]
  if last and tonumber(last) >= now then now = tonumber(last) + 1 end
  return now
end
"""

DROP = """
local function drop(b)
  local list = redis.call('HGET', KEYS[3], b)
  if list then
    for p in string.gmatch(list, '%S+') do
      local v = redis.call('GET', p)
      if v and string.sub(v, 1, #b + 1) == b .. ' ' then redis.call('DEL', p) end
    end
  end
  redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[2], b) or '0'))
  redis.call('DEL', b)
  redis.call('ZREM', KEYS[1], b)
  redis.call('HDEL', KEYS[2], b)
  redis.call('HDEL', KEYS[3], b)
  table.insert(dropped, b)
end
"""

#: KEYS: lru, sizes, ptrs, total, blob, pointer...; ARGV: bytes, max_bytes, ttl_ms, blob
#: tokens, then the tokens at each pointer's boundary (KEYS[i] <-> ARGV[i - 1]). Returns the
#: blob keys dropped. Eviction goes on while the total is over max_bytes and any blob but
#: the new one is left.
STORE = (
    "local dropped = {}\n"
    + DROP
    + CLOCK
    + """
local size, max_bytes, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local blob = KEYS[5]
local now = clock(KEYS[1])
if redis.call('HEXISTS', KEYS[2], blob) == 1 then
  redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[2], blob)))
end
for _, b in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', us(now - ttl * 1000))) do
  if b ~= blob then drop(b) end
end
local names = {}
for i = 6, #KEYS do
  local old = redis.call('GET', KEYS[i])
  if old then
    local ob, ot = string.match(old, '^(%S+) (%d+)$')
    if ob and ob ~= blob and ot == ARGV[i - 1] then drop(ob) end
  end
  redis.call('SET', KEYS[i], blob .. ' ' .. ARGV[4], 'PX', ttl)
  table.insert(names, KEYS[i])
end
redis.call('HSET', KEYS[2], blob, size)
redis.call('HSET', KEYS[3], blob, table.concat(names, ' '))
redis.call('ZADD', KEYS[1], us(now), blob)
if tonumber(redis.call('INCRBY', KEYS[4], size)) < size then redis.call('SET', KEYS[4], size) end
while tonumber(redis.call('GET', KEYS[4])) > max_bytes do
  local victim = nil
  for _, b in ipairs(redis.call('ZRANGE', KEYS[1], 0, 1)) do
    if b ~= blob then victim = b break end
  end
  if not victim then break end
  drop(victim)
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return dropped
"""
)

#: KEYS: blob, lru, ptrs, sizes, total; ARGV: ttl_ms. 1 if the blob exists.
TOUCH = CLOCK + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = tonumber(ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], 'XX', us(clock(KEYS[2])), KEYS[1])
local list = redis.call('HGET', KEYS[3], KEYS[1])
if list then
  for p in string.gmatch(list, '%S+') do redis.call('PEXPIRE', p, ttl) end
end
for i = 2, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
"""

#: KEYS: lru, sizes, ptrs, total; ARGV: blob key. Drops the blob, its pointers and accounting.
DISCARD = "local dropped = {}\n" + DROP + "\ndrop(ARGV[1])\nreturn dropped\n"

#: KEYS: pointer; ARGV: blob key. Deletes the pointer if it still names that blob.
UNPOINT = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('DEL', KEYS[1]) end
return 0
"""
