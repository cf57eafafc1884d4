#!lua name=__LIB__
--[[
weather-api's Valkey Function library.

Every accepted report changes every aggregate in one atomic call, so an outage or a crash never
leaves a half-counted report. `__LIB__` is replaced at load time by a name that carries a hash of
this file: a new version loads beside the old one, and replicas running either version keep
working during a rolling update.

All reading and checking happens before the first write: a Valkey script is atomic but not
transactional, so an error after a write would leave that write in place.

Keys are built from the prefix in ARGV[1]; KEYS[1] is the total counter, declared so that a
cluster routes the call to the slot of the (hash-tagged) prefix.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(x)
  return string.format('%.17g', x)
end

-- Append the open bucket of `m` to its series when `now` is past the bucket's end.
local function close_bucket(p, m, interval, now, maxlen)
  local bucket_key = p .. ':bucket:' .. m
  local b = redis.call('HMGET', bucket_key, 'start', 'count', 'temperature_sum', 'humidity_sum')
  if not b[1] then
    return
  end
  local start = tonumber(b[1])
  if start + interval > now then
    return
  end
  local count = tonumber(b[2])
  local series_key = p .. ':series:' .. m
  -- A stream id must grow; a primary whose clock runs behind its predecessor's (after a
  -- failover) must not make XADD fail halfway through a report, so such a bucket is dropped.
  local last = redis.call('XREVRANGE', series_key, '+', '-', 'COUNT', 1)
  local last_ms = -1
  if last[1] then
    last_ms = tonumber(string.match(last[1][1], '^(%d+)'))
  end
  if start > last_ms then
    redis.call('XADD', series_key, 'MAXLEN', maxlen, start .. '-0',
      'temperature', fmt(tonumber(b[3]) / count),
      'humidity', fmt(tonumber(b[4]) / count),
      'count', count)
  end
  redis.call('DEL', bucket_key)
end

-- Make sure a municipality's per-weather zset lists every weather, at 0 before any report.
local function register(p, m, weathers)
  if redis.call('SADD', p .. ':municipalities', m) == 1 then
    local args = {}
    for _, w in ipairs(weathers) do
      table.insert(args, 0)
      table.insert(args, w)
    end
    redis.call('ZADD', p .. ':conditions:' .. m, 'NX', unpack(args))
    redis.call('ZADD', p .. ':conditions', 'NX', unpack(args))
  end
end

-- What one call of record() adds up per municipality, and over all of them, before writing it
-- once (`write_totals`). Counts, extremes and per-weather counts come out the same whether
-- written per report or once per call (integers, max and min are exact), and nothing in a call
-- reads them; the sums are floating point, so they are still added report by report, in order.
-- One call's ~20 Valkey commands per report become ~7 (Valkey's CPU per report: docs/performance.md).
local function new_totals()
  return {order = {}, by_name = {}, all = {n = 0, conditions = {}}}
end

-- Extremes: the sent string (what ZADD parses, as before) of the largest and smallest value.
local function extremes(e, t, h)
  local tn, hn = tonumber(t), tonumber(h)
  if e.tmax == nil or tn > e.tmax_n then e.tmax, e.tmax_n = t, tn end
  if e.tmin == nil or tn < e.tmin_n then e.tmin, e.tmin_n = t, tn end
  if e.hmax == nil or hn > e.hmax_n then e.hmax, e.hmax_n = h, hn end
  if e.hmin == nil or hn < e.hmin_n then e.hmin, e.hmin_n = h, hn end
end

-- A municipality's totals; on its first report in the call, register it and roll its bucket
-- over (both no-ops for its later reports in the same call: `now` does not move).
local function totals_of(p, cfg, now, totals, m)
  local a = totals.by_name[m]
  if a == nil then
    register(p, m, cfg.weathers)
    close_bucket(p, m, cfg.interval, now, cfg.series_maxlen)
    local bucket_key = p .. ':bucket:' .. m
    redis.call('HSETNX', bucket_key, 'start', now - now % cfg.interval)
    a = {m = m, bucket = bucket_key, n = 0, conditions = {}}
    totals.by_name[m] = a
    table.insert(totals.order, a)
  end
  return a
end

-- Apply one report (already validated by the API): what must be done per report now, the rest
-- added to the totals.
local function apply(p, cfg, now, totals, r)
  local id, m, t, h, w = r[1], r[2], r[3], r[4], r[5]
  local a = totals_of(p, cfg, now, totals, m)
  a.n = a.n + 1
  a.tsum = redis.call('HINCRBYFLOAT', p .. ':sum:temperature', m, t)
  a.hsum = redis.call('HINCRBYFLOAT', p .. ':sum:humidity', m, h)
  redis.call('HINCRBYFLOAT', a.bucket, 'temperature_sum', t)
  redis.call('HINCRBYFLOAT', a.bucket, 'humidity_sum', h)
  extremes(a, t, h)
  extremes(totals.all, t, h)
  a.conditions[w] = (a.conditions[w] or 0) + 1
  totals.all.n = totals.all.n + 1
  totals.all.conditions[w] = (totals.all.conditions[w] or 0) + 1

  redis.call('XADD', p .. ':recent:' .. m, 'MAXLEN', '~', cfg.recent_maxlen, '*',
    'id', id, 'temperature', t, 'humidity', h, 'weather', w)
end

-- Write what the call added up: counts, means, extremes, per-weather counts.
local function write_totals(p, count_key, totals)
  for _, a in ipairs(totals.order) do
    local n = redis.call('HINCRBY', p .. ':counts', a.m, a.n)
    redis.call('HSET', p .. ':avg:temperature', a.m, fmt(tonumber(a.tsum) / n))
    redis.call('HSET', p .. ':avg:humidity', a.m, fmt(tonumber(a.hsum) / n))
    redis.call('ZADD', p .. ':max:' .. a.m, 'GT', a.tmax, 'temperature', a.hmax, 'humidity')
    redis.call('ZADD', p .. ':min:' .. a.m, 'LT', a.tmin, 'temperature', a.hmin, 'humidity')
    for w, k in pairs(a.conditions) do
      redis.call('ZINCRBY', p .. ':conditions:' .. a.m, k, w)
    end
    redis.call('HINCRBY', a.bucket, 'count', a.n)
  end
  local all = totals.all
  if all.n > 0 then
    -- INCRBY would do, but the API's Valkey user may run only what it needs, INCR among them
    -- (deploy/base/valkey/users.acl.in): GET and SET, in one atomic script, add the same.
    redis.call('SET', count_key, tonumber(redis.call('GET', count_key) or '0') + all.n)
    redis.call('ZADD', p .. ':max', 'GT', all.tmax, 'temperature', all.hmax, 'humidity')
    redis.call('ZADD', p .. ':min', 'LT', all.tmin, 'temperature', all.hmin, 'humidity')
    for w, k in pairs(all.conditions) do
      redis.call('ZINCRBY', p .. ':conditions', k, w)
    end
  end
end

--[=[
record(KEYS={count}, ARGV={config, requests})
  config:   JSON {"prefix", "interval" (ms), "series_maxlen", "recent_maxlen", "weathers", "ttl"}
  requests: JSON [[idempotency key or "", fingerprint, replay, [[id, m, t, h, w], ...]], ...]
Several HTTP requests arrive in one call (the API groups concurrent ones); each is applied whole
and in order, so two requests with one Idempotency-Key in one call apply once. A key's record is
`fingerprint \n replay` with the TTL of cfg.ttl: the only keys with a TTL, so the only ones a
`volatile-*` maxmemory policy may evict. `replay` is what the API needs to answer again (its
first id, ~36 bytes), not the answer itself.
-> JSON, one entry per request: ["applied"] | ["replayed", replay] | ["conflict"]; one string,
   not a nested array, because the API decodes one string in one step (msgspec) and a nested
   array element by element (valkey-py's parser), which cost ~2 us per request.
]=]
local function record(keys, args)
  local cfg = cjson.decode(args[1])
  local requests = cjson.decode(args[2])
  local p = cfg.prefix
  local now = now_ms()
  local totals = new_totals()
  local out = {}
  for i, req in ipairs(requests) do
    local idem_key, fingerprint, replay, reports = req[1], req[2], req[3], req[4]
    local seen = false
    if idem_key ~= '' then
      seen = redis.call('GET', idem_key)
    end
    if seen then
      local cut = string.find(seen, '\n', 1, true)
      if string.sub(seen, 1, cut - 1) == fingerprint then
        out[i] = {'replayed', string.sub(seen, cut + 1)}
      else
        out[i] = {'conflict'}
      end
    else
      for _, r in ipairs(reports) do
        apply(p, cfg, now, totals, r)
      end
      if idem_key ~= '' then
        redis.call('SET', idem_key, fingerprint .. '\n' .. replay, 'EX', cfg.ttl)
      end
      out[i] = {'applied'}
    end
  end
  write_totals(p, keys[1], totals)
  return cjson.encode(out)
end

--[[
prepare(KEYS={count}, ARGV={config, m1, m2, ...})
  config: the JSON of record()
Registers every configured municipality (all weathers at 0) and closes buckets whose interval
has ended, so a quiet municipality's last bucket still reaches its series. Called at startup and
then periodically; safe to call from every replica at once.
]]
local function prepare(keys, args)
  local cfg = cjson.decode(args[1])
  local now = now_ms()
  for i = 2, #args do
    register(cfg.prefix, args[i], cfg.weathers)
    close_bucket(cfg.prefix, args[i], cfg.interval, now, cfg.series_maxlen)
  end
  return 'OK'
end

-- version() -> the library name: proves that this exact version is loaded. Flagged like a
-- write (no `no-writes`), so Valkey refuses it exactly when it would refuse a report: over
-- maxmemory (OOM), a replica (READONLY), short of replicas (NOREPLICAS), cut off (MASTERDOWN).
local function version(keys, args)
  return '__LIB__'
end

redis.register_function('__LIB___record', record)
redis.register_function('__LIB___prepare', prepare)
redis.register_function('__LIB___version', version)
