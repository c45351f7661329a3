-- bcproxy's shared budget, key format v1: one script for every decision, run atomically by
-- Redis on Redis's clock. It mirrors src/budget/ledger.rs (the window count) and
-- src/budget/policy.rs (what is left, the write reserve, which report wins, the pause after a
-- throttle); tests/cluster_props.rs holds it to "never more than limit in any window".
--
-- KEYS[1] sends     ZSET  send id -> time (ms) it was granted
-- KEYS[2] seq       STRING the last send id
-- KEYS[3] state     HASH  report (left, send, expires), pause (pause, until, probe, prober,
--                         backoffs), the store's fixed window (ends, quota, window)
-- KEYS[4] instances ZSET  instance -> last heartbeat (ms)
-- ARGV[1] op: take | estimate | observe | release | standing | heartbeat | rejoin | leave
-- ARGV[2] limit, ARGV[3] window (ms), ARGV[4] '1' for the store's fixed window (oauth)
-- ARGV[5..] the op's own arguments (below)
-- Every op answers {op result..., remaining, limit, window, step, pause, pause_left, used,
-- now, instances seen in the last 30 s}.

local sends, seqk, state, instances = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local limit, window, fixed = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local s = {}
local raw = redis.call('HGETALL', state)
for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
local dirty = {}
local function get(k, d) local v = s[k]; if v == nil then return d end; return tonumber(v) end
local function put(k, v) s[k] = tostring(v); dirty[#dirty + 1] = k end

-- The store's own window (oauth) replaces the configured guess once it stated it.
if fixed then
  limit = get('quota', limit)
  window = get('window', window)
end
local step = fixed and window or math.floor(window / 60)
local hold = window + math.floor(window / 60)

-- ledger.rs: the sends still counting.
local ends = 0
if fixed then
  ends = get('ends', 0)
  if ends == 0 then ends = now + window; put('ends', ends) end
  if now >= ends then
    ends = ends + window * (math.floor((now - ends) / window) + 1)
    put('ends', ends)
  end
  redis.call('ZREMRANGEBYSCORE', sends, '-inf', '(' .. (ends - 2 * window))
else
  redis.call('ZREMRANGEBYSCORE', sends, '-inf', now - hold)
end
-- ledger.rs margin: a send in a fixed window's last tenth (at most a second) counts in the next
-- window too (it may reach the store after its reset).
local from = fixed and (ends - window - math.min(math.floor(window / 10), 1000)) or ('(' .. (now - hold))
local used = redis.call('ZCOUNT', sends, from, '+inf')
local last = tonumber(redis.call('GET', seqk) or '0')

-- policy.rs remaining: the smaller of the own count and the store's report (less the sends
-- made after the answer that carried it), while the report holds.
local function reported()
  local expires = get('rexp', 0)
  if now < expires then
    return math.max(0, get('rleft', 0) - (last - get('rsend', 0))), expires
  end
  return nil, 0
end
local function remaining()
  local own = math.max(0, limit - used)
  local r = reported()
  if r ~= nil and r < own then return r end
  return own
end

-- ledger.rs free_at: when n sends are free by the own count; nil when never.
local function free_at(n)
  if limit == 0 then return nil end
  local left = math.max(0, limit - used)
  if n <= left then return now end
  local needed = n - left
  if fixed then
    return ends + window * math.floor((needed - 1) / limit)
  end
  local counted = math.max(used, 1)
  local rounds = math.floor((needed - 1) / counted)
  local index = (needed - 1) % counted
  local first = now
  local at = redis.call('ZRANGE', sends, from, '+inf', 'BYSCORE', 'LIMIT', index, 1, 'WITHSCORES')
  if at[2] ~= nil then first = tonumber(at[2]) + hold end
  return first + hold * rounds
end

-- policy.rs Pause: 0 open, 1 until (then a probe if 'probe'), 2 probing ('prober' out, 0 none).
local resumed = 0
local function advance()
  if get('pause', 0) == 1 and now >= get('until', 0) then
    if get('probe', 0) == 1 then put('pause', 2); put('prober', 0)
    else put('pause', 0); resumed = 1 end
  end
end
local function blocked_by_pause()
  local p = get('pause', 0)
  return p == 1 or (p == 2 and get('prober', 0) ~= 0)
end

local function next_change()
  local best = nil
  local function consider(at) if at ~= nil and at > now and (best == nil or at < best) then best = at end end
  if get('pause', 0) == 1 then consider(get('until', 0)) end
  local _, rexp = reported(); consider(rexp)
  consider(free_at(math.max(0, limit - used) + 1))
  if best == nil then return -1 end
  return best - now
end

local function expire_keys()
  local ttl = 2 * hold + 60000
  redis.call('PEXPIRE', sends, ttl)
  redis.call('PEXPIRE', seqk, ttl)
  redis.call('PEXPIRE', state, ttl)
end

local result = {}
if op == 'take' then
  -- ARGV[5] reserve
  local reserve = tonumber(ARGV[5])
  advance()
  local rem = remaining()
  if blocked_by_pause() or rem == 0 then
    result = {0, 0, next_change()}                -- blocked: all
  elseif rem <= reserve then
    result = {0, 1, next_change()}                -- blocked: the write reserve
  else
    local id = redis.call('INCR', seqk)
    last = id
    redis.call('ZADD', sends, now, id)
    used = used + 1
    local probe = 0
    if get('pause', 0) == 2 and get('prober', 0) == 0 then put('prober', id); probe = 1 end
    result = {1, id, probe, resumed}
  end
elseif op == 'estimate' then
  -- ARGV[5] need
  local need = tonumber(ARGV[5])
  local at = free_at(need)
  if at == nil then
    result = {-1}
  else
    local r, rexp = reported()
    if r ~= nil and r < need and rexp > at then at = rexp end
    if get('pause', 0) == 1 and get('until', 0) > at then at = get('until', 0) end
    result = {at - now}
  end
elseif op == 'observe' then
  -- ARGV[5] send, [6] left (-1: none), [7] quota, [8] window ms, [9] reset ms (-1: none),
  -- [10] throttled 0/1, [11] plan (0 until the window moves, 1 wait, 2 back off),
  -- [12] the stated wait ms, [13] jitter 0..1000
  local send, left = tonumber(ARGV[5]), tonumber(ARGV[6])
  local quota, swindow, reset = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local throttled, plan, wait, jitter = ARGV[10] == '1', tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
  if fixed and quota > 0 and swindow > 0 and reset >= 0 then
    put('quota', quota); put('window', swindow); put('ends', now + reset)
    limit, window, step, ends = quota, swindow, swindow, now + reset
  end
  if left >= 0 then
    local holds = step
    if fixed and reset >= 0 then holds = reset end
    if s['rsend'] == nil or send >= get('rsend', 0) or now >= get('rexp', 0) then
      put('rleft', left); put('rsend', send); put('rexp', now + holds)
    end
  end
  local paused, length, probe = 0, 0, 0
  if throttled then
    local already = get('pause', 0) == 1 and get('until', 0) > now
    -- A throttle of a send made before the probe that is out is stale: re-arming the pause
    -- would let a second probe go while the first is still at the store.
    local stale = get('pause', 0) == 2 and get('prober', 0) ~= 0 and get('prober', 0) ~= send
    if not stale and (not already or (get('pause', 0) == 2 and get('prober', 0) == send)) then
      local untl
      if plan == 0 then
        local free = nil
        if math.max(0, limit - used) == 0 then free = free_at(1) end
        untl = math.max(free or now, now + step); probe = 1
      elseif plan == 1 then
        untl = now + math.max(wait, 1); probe = 0; put('backoffs', 0)
      else
        local b = get('backoffs', 0)
        local backoff = math.min(1000 * (2 ^ math.min(b, 6)), 60000)
        untl = now + math.floor(backoff * (0.75 + (jitter / 1000) * 0.5)); probe = 1
        put('backoffs', b + 1)
      end
      put('pause', 1); put('until', untl); put('probe', probe); put('prober', 0)
      paused, length = 1, untl - now
    end
  elseif get('pause', 0) == 2 and get('prober', 0) == send then
    put('pause', 0); put('backoffs', 0); resumed = 1
  end
  result = {paused, length, probe, resumed}
elseif op == 'release' then
  -- ARGV[5] send, [6] sent 0/1
  local send = tonumber(ARGV[5])
  if ARGV[6] ~= '1' then
    used = used - redis.call('ZREM', sends, send)
  end
  if get('pause', 0) == 2 and get('prober', 0) == send then put('prober', 0) end
  result = {1}
elseif op == 'heartbeat' then
  -- ARGV[5] instance. Answers the ledger's epoch ('' when it has none: it was lost), then
  -- each instance seen in the last 30 s and when (ms).
  redis.call('ZADD', instances, now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', instances, '-inf', now - 300000)
  redis.call('PEXPIRE', instances, 600000)
  advance()
  result = {s['epoch'] or ''}
  local seen = redis.call('ZRANGE', instances, now - 30000, '+inf', 'BYSCORE', 'WITHSCORES')
  for _, v in ipairs(seen) do result[#result + 1] = v end
elseif op == 'leave' then
  -- ARGV[5] instance
  redis.call('ZREM', instances, ARGV[5])
  result = {1}
elseif op == 'rejoin' then
  -- A process (re)connecting adds its own sends still in the window, so the ledger is whole
  -- again. ARGV[5] instance, [6] the epoch it last saw ('' for none), [7] an epoch to set
  -- when the ledger has none, [8] n: how many ages follow for every own send in the window;
  -- ARGV[9..8+n] those ages (ms ago); the rest: the ages of the sends made while it was
  -- away. The ledger it left (same epoch) already holds its older sends; a lost one (no or
  -- another epoch) gets them all.
  local known, fresh, n = ARGV[6], ARGV[7], tonumber(ARGV[8])
  local from_i, to_i = 9 + n, #ARGV
  if s['epoch'] == nil then
    put('epoch', fresh)
    if known ~= '' then from_i, to_i = 9, 8 + n end
  elseif s['epoch'] ~= known and known ~= '' then
    from_i, to_i = 9, 8 + n
  end
  local added = 0
  for i = from_i, to_i do
    local age = tonumber(ARGV[i])
    if age < hold then
      local id = redis.call('INCR', seqk)
      redis.call('ZADD', sends, now - age, id)
      added = added + 1
    end
  end
  last = tonumber(redis.call('GET', seqk) or '0')
  redis.call('ZADD', instances, now, ARGV[5])
  redis.call('PEXPIRE', instances, 600000)
  used = redis.call('ZCOUNT', sends, from, '+inf')
  result = {s['epoch'], added}
else
  -- standing
  advance()
  result = {1}
end

for _, k in ipairs(dirty) do redis.call('HSET', state, k, s[k]) end
expire_keys()
local seen = redis.call('ZCOUNT', instances, now - 30000, '+inf')
-- The pause: 0 open, 1 until (pause_left ms to go), 2 its time is up (the next send probes),
-- 3 the probe is out.
local pause, pause_left = get('pause', 0), 0
if pause == 1 then pause_left = math.max(0, get('until', 0) - now) end
if pause == 2 and get('prober', 0) ~= 0 then pause = 3 end
for _, v in ipairs({remaining(), limit, window, step, pause, pause_left, used, now, seen}) do
  result[#result + 1] = v
end
return result
