"""The Lua scripts of :mod:`corral.router.limits_redis`: each runs atomically in Redis.

    ADMIT    KEYS: req, tok, amt, sum, lease of each bucket (5 per bucket), then the request's
                   cancel mark
             ARGV: window (us), lease length (us), key TTL (ms), request id, tokens to reserve,
                   then requests/min, tokens/min, concurrency of each bucket (0: no limit)
             ->    {1, requests in window, tokens in window, requests reset (us), tokens reset (us)}
                   of the first bucket, after adding the request to every bucket; or
                   {0, bucket index, 'requests'|'tokens'|'concurrent', wait (us), the same four}
                   of the first full bucket, adding nothing anywhere; or {-1}, adding nothing,
                   when the request was cancelled first (nobody reads that reply: its router
                   gave up waiting before it cancelled)
    CANCEL   KEYS: as ADMIT's; ARGV: request id, mark TTL (ms): voids an admission whose reply
             the router gave up waiting for (it may have run, or run later): takes the request
             out of every bucket (request, reservation, lease) and leaves the cancel mark, so
             that an ADMIT arriving after it adds nothing
    RELEASE  KEYS: tok, amt, sum, lease of each bucket; ARGV: request id, used tokens ('' keeps
             the reservation): frees the lease, reconciles the reservation if still in the window
    RENEW    KEYS: lease sets; ARGV: lease length (us), key TTL (ms), one request id per key:
             pushes back leases that still exist

Times are Redis' own (``TIME``, microseconds), never a router's.
"""

from __future__ import annotations

# Lua numbers are doubles; '%d' writes microsecond times and counts without an exponent.
ADMIT = """
local function int(x) return string.format('%d', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window, lease_us, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local id, reserve = ARGV[4], tonumber(ARGV[5])
local cutoff = now - window
local n = (#KEYS - 1) / 5
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {-1} end

local function reset(key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] then return math.max(0, tonumber(oldest[2]) + window - now) end
  return 0
end

local function expire_tokens(tok, amt, sum)
  while true do
    local old = redis.call('ZRANGEBYSCORE', tok, '-inf', int(cutoff), 'LIMIT', 0, 500)
    if #old == 0 then return end
    local gone = 0
    for _, amount in ipairs(redis.call('HMGET', amt, unpack(old))) do
      gone = gone + (tonumber(amount) or 0)
    end
    redis.call('ZREM', tok, unpack(old))
    redis.call('HDEL', amt, unpack(old))
    redis.call('DECRBY', sum, int(gone))
  end
end

local function limits(i)
  local a = 6 + i * 3
  return tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
end

for i = 0, n - 1 do
  local k = i * 5
  local rpm, tpm, conc = limits(i)
  local wait, what, count, used = -1, '', 0, 0
  if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', int(cutoff))
    count = redis.call('ZCARD', KEYS[k + 1])
    if count + 1 > rpm then wait, what = reset(KEYS[k + 1]), 'requests' end
  end
  if tpm > 0 then
    expire_tokens(KEYS[k + 2], KEYS[k + 3], KEYS[k + 4])
    used = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
    if used + math.min(reserve, tpm) > tpm then
      local w = reset(KEYS[k + 2])
      if w > wait then wait, what = w, 'tokens' end
    end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 5], '-inf', int(now))
    if redis.call('ZCARD', KEYS[k + 5]) >= conc and 1000000 > wait then
      wait, what = 1000000, 'concurrent'
    end
  end
  if wait >= 0 then
    return {0, i, what, int(wait), count, int(used), int(reset(KEYS[k + 1])), int(reset(KEYS[k + 2]))}
  end
end

for i = 0, n - 1 do
  local k = i * 5
  local rpm, tpm, conc = limits(i)
  if rpm > 0 then
    redis.call('ZADD', KEYS[k + 1], int(now), id)
    redis.call('PEXPIRE', KEYS[k + 1], ttl_ms)
  end
  if tpm > 0 then
    local amount = math.min(reserve, tpm)
    redis.call('ZADD', KEYS[k + 2], int(now), id)
    redis.call('HSET', KEYS[k + 3], id, int(amount))
    redis.call('INCRBY', KEYS[k + 4], int(amount))
    for j = 2, 4 do redis.call('PEXPIRE', KEYS[k + j], ttl_ms) end
  end
  if conc > 0 then
    redis.call('ZADD', KEYS[k + 5], int(now + lease_us), id)
    redis.call('PEXPIRE', KEYS[k + 5], ttl_ms)
  end
end
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
return {1, redis.call('ZCARD', KEYS[1]), int(used), int(reset(KEYS[1])), int(reset(KEYS[2]))}
"""

# KEYS: tok, amt, sum, lease of each bucket. ARGV: id, used tokens ('' keeps the reservation).
RELEASE = """
local function int(x) return string.format('%d', x) end
local id, used = ARGV[1], tonumber(ARGV[2])
for i = 0, #KEYS / 4 - 1 do
  local k = i * 4
  redis.call('ZREM', KEYS[k + 4], id)
  if used ~= nil and redis.call('ZSCORE', KEYS[k + 1], id) then
    local old = tonumber(redis.call('HGET', KEYS[k + 2], id) or '0')
    redis.call('HSET', KEYS[k + 2], id, int(used))
    redis.call('INCRBY', KEYS[k + 3], int(used - old))
  end
end
return 1
"""

# KEYS: req, tok, amt, sum, lease of each bucket, then the cancel mark. ARGV: id, mark TTL (ms).
CANCEL = """
local id = ARGV[1]
redis.call('SET', KEYS[#KEYS], '1', 'PX', ARGV[2])
for i = 0, (#KEYS - 1) / 5 - 1 do
  local k = i * 5
  redis.call('ZREM', KEYS[k + 1], id)
  if redis.call('ZREM', KEYS[k + 2], id) == 1 then
    local amount = redis.call('HGET', KEYS[k + 3], id)
    redis.call('HDEL', KEYS[k + 3], id)
    if amount then redis.call('DECRBY', KEYS[k + 4], amount) end
  end
  redis.call('ZREM', KEYS[k + 5], id)
end
return 1
"""

# KEYS: lease sets; ARGV: lease length (us), key TTL (ms), then one request id per key.
RENEW = """
local t = redis.call('TIME')
local expiry = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]))
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[i + 2])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
"""
