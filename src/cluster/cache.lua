-- bcproxy's shared cache, key format v1: entries, a lease lock per key, generations per tag,
-- a size bound, and the invalidation that drops entries and tells every process, run
-- atomically by Redis on Redis's clock. Mirrors src/cache (tracking.rs: a fetch that began
-- before a drop of one of its tags is never stored).
--
-- KEYS[1] any key of the cluster (routes the call; every key shares the hash tag)
-- ARGV[1] the key prefix ("bcproxy:{name}:v1:"), ARGV[2] op, ARGV[3..] the op's arguments.
--
-- c:<h>  HASH   an entry: s status, h header block, b body, f fresh until, x stale until,
--               p stored (ms)
-- l:<h>  STRING the lease of the process fetching <h> (its token), PX the lease
-- n:<h>  STRING "the answer for <h> is not shared": the others fetch on their own
-- t:<tag> SET   the entries that depend on a tag
-- g, g:<tag>    generations: every drop of everything / of a tag counts one up
-- ix ZSET entry -> stale until; wt HASH entry -> weight; bytes: the weights' sum

local P, op = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local HOUR = 3600000

local function gen(name)
  return tonumber(redis.call('GET', P .. name) or '0')
end

local function forget(h)
  local w = tonumber(redis.call('HGET', P .. 'wt', h) or '0')
  if w > 0 then redis.call('DECRBY', P .. 'bytes', w) end
  redis.call('HDEL', P .. 'wt', h)
  redis.call('ZREM', P .. 'ix', h)
  return redis.call('DEL', P .. 'c:' .. h)
end

-- An entry still servable: {status, headers, body, fresh ms left (<= 0: stale), stale ms
-- left, age ms}, or nil.
local function entry(h)
  local e = redis.call('HMGET', P .. 'c:' .. h, 's', 'h', 'b', 'f', 'x', 'p')
  if e[1] == false or tonumber(e[5]) <= now then return nil end
  return {e[1], e[2], e[3], tonumber(e[4]) - now, tonumber(e[5]) - now, now - tonumber(e[6])}
end

local function keep_at_least(key, ms)
  local left = redis.call('PTTL', key)
  if left >= 0 and left < ms then redis.call('PEXPIRE', key, ms) end
  if left == -1 then redis.call('PEXPIRE', key, ms) end
end

if op == 'peek' then
  -- ARGV[3] h. {1, entry...} | {0}
  local e = entry(ARGV[3])
  if e == nil then return {0} end
  return {1, e[1], e[2], e[3], e[4], e[5], e[6]}

elseif op == 'claim' then
  -- ARGV[3] h, [4] token, [5] lease ms, [6] tag 1, [7] tag 2.
  -- {1, entry...} fresh | {2, g, g1, g2} this process fetches | {3, lease ms left} another
  -- does | {4} not shared: fetch on your own
  local h = ARGV[3]
  local e = entry(h)
  if e ~= nil and e[4] > 0 then return {1, e[1], e[2], e[3], e[4], e[5], e[6]} end
  if redis.call('EXISTS', P .. 'n:' .. h) == 1 then return {4} end
  if redis.call('SET', P .. 'l:' .. h, ARGV[4], 'NX', 'PX', ARGV[5]) then
    return {2, gen('g'), gen('g:' .. ARGV[6]), gen('g:' .. ARGV[7])}
  end
  return {3, redis.call('PTTL', P .. 'l:' .. h)}

elseif op == 'renew' then
  -- ARGV[3] h, [4] token, [5] lease ms. {1} renewed | {0} the lease is not ours any more
  local l = P .. 'l:' .. ARGV[3]
  if redis.call('GET', l) == ARGV[4] then
    redis.call('PEXPIRE', l, ARGV[5])
    return {1}
  end
  return {0}

elseif op == 'release' then
  -- ARGV[3] h, [4] token, [5] ms the others should fetch on their own (0: none)
  local h = ARGV[3]
  if redis.call('GET', P .. 'l:' .. h) == ARGV[4] then redis.call('DEL', P .. 'l:' .. h) end
  if tonumber(ARGV[5]) > 0 then redis.call('SET', P .. 'n:' .. h, '1', 'PX', ARGV[5]) end
  return {1}

elseif op == 'put' then
  -- ARGV[3] h, [4] token, [5] status, [6] headers, [7] body, [8] fresh ms, [9] stale ms,
  -- [10] weight, [11] max bytes, [12] g, [13] g1, [14] g2, [15] tag 1, [16] tag 2.
  -- {1} stored | {0} a drop came after the fetch began (or it does not fit)
  local h, token = ARGV[3], ARGV[4]
  local fresh, stale, weight, max = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  local t1, t2 = ARGV[15], ARGV[16]
  local stored = 0
  if gen('g') == tonumber(ARGV[12]) and gen('g:' .. t1) == tonumber(ARGV[13])
      and gen('g:' .. t2) == tonumber(ARGV[14]) and weight <= max then
    -- What has expired goes first, then the soonest to expire until the entry fits.
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ix', '-inf', now, 'LIMIT', 0, 64)) do
      forget(old)
    end
    forget(h)
    local bytes = tonumber(redis.call('GET', P .. 'bytes') or '0')
    while bytes + weight > max do
      local first = redis.call('ZRANGE', P .. 'ix', 0, 0)
      if first[1] == nil then break end
      forget(first[1])
      bytes = tonumber(redis.call('GET', P .. 'bytes') or '0')
    end
    local life = fresh + stale
    local c = P .. 'c:' .. h
    redis.call('HSET', c, 's', ARGV[5], 'h', ARGV[6], 'b', ARGV[7], 'f', now + fresh, 'x', now + life, 'p', now)
    redis.call('PEXPIRE', c, life)
    redis.call('ZADD', P .. 'ix', now + life, h)
    redis.call('HSET', P .. 'wt', h, weight)
    redis.call('INCRBY', P .. 'bytes', weight)
    for _, k in ipairs({'ix', 'wt', 'bytes'}) do keep_at_least(P .. k, life + 60000) end
    for _, tag in ipairs({t1, t2}) do
      redis.call('SADD', P .. 't:' .. tag, h)
      keep_at_least(P .. 't:' .. tag, life + 60000)
    end
    stored = 1
  end
  if redis.call('GET', P .. 'l:' .. h) == token then redis.call('DEL', P .. 'l:' .. h) end
  return {stored}

elseif op == 'drop' then
  -- ARGV[3] channel, [4] message, [5] '1' for everything, [6..] tags.
  -- Counts the generations up (a fetch under way is not stored), drops the entries, and
  -- publishes the message to every process. {entries dropped}
  local dropped = 0
  if ARGV[5] == '1' then
    redis.call('INCR', P .. 'g')
    redis.call('PEXPIRE', P .. 'g', HOUR)
    for _, h in ipairs(redis.call('ZRANGE', P .. 'ix', 0, -1)) do
      dropped = dropped + forget(h)
    end
  end
  for i = 6, #ARGV do
    local tag = ARGV[i]
    redis.call('INCR', P .. 'g:' .. tag)
    redis.call('PEXPIRE', P .. 'g:' .. tag, HOUR)
    for _, h in ipairs(redis.call('SMEMBERS', P .. 't:' .. tag)) do
      dropped = dropped + forget(h)
    end
    redis.call('DEL', P .. 't:' .. tag)
  end
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {dropped}

elseif op == 'publish' then
  -- ARGV[3] channel, [4] message
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {1}
end
return redis.error_reply('bcproxy cache.lua: unknown op ' .. tostring(op))
