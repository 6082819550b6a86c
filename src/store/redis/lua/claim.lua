-- KEYS: stream, user run, user wait, thread run, thread wait, wait index, job.
-- ARGV: prefix, group, entry id, job id, user limit, slot lease ms, runner, now (RFC 3339).
local stream, key, entry, id = KEYS[1], KEYS[7], ARGV[3], ARGV[4]
local status = redis.call('HGET', key, 'status')
if not status then
  drop(stream, entry)
  return {'missing'}
end
if is_final(status) then
  drop(stream, entry)
  if redis.call('HGET', key, 'entry') == entry then redis.call('HDEL', key, 'entry') end
  return {'final', status}
end
if redis.call('HGET', key, 'entry') ~= entry then
  drop(stream, entry)
  return {'stale'}
end
local now = now_ms()
local lease = tonumber(ARGV[6])
local limit = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local in_user = redis.call('ZSCORE', KEYS[2], id)
local in_thread = redis.call('ZSCORE', KEYS[4], id)
local user_ok = in_user or redis.call('ZCARD', KEYS[2]) < limit
local thread_ok = in_thread or redis.call('ZCARD', KEYS[4]) < 1
if not (user_ok and thread_ok) then
  -- Defer: give back any slot reserved for this job, wait behind the full gate.
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[4], id)
  local wait, run, wait_limit = KEYS[3], KEYS[2], limit
  if not thread_ok then wait, run, wait_limit = KEYS[5], KEYS[4], 1 end
  redis.call('RPUSH', wait, id)
  redis.call('HSET', KEYS[6], wait, run .. '\n' .. wait_limit)
  drop(stream, entry)
  redis.call('HDEL', key, 'entry')
  redis.call('HSET', key, 'waiting', '1')
  if in_user then promote(stream, KEYS[3], KEYS[2], limit, KEYS[6], now, lease) end
  if in_thread then promote(stream, KEYS[5], KEYS[4], 1, KEYS[6], now, lease) end
  return {'deferred'}
end
redis.call('ZADD', KEYS[2], now + lease, id)
redis.call('ZADD', KEYS[4], now + lease, id)
local attempt = redis.call('HINCRBY', key, 'attempt', 1)
redis.call('HSET', key, 'status', 'running', 'runner', ARGV[7], 'started_at', ARGV[8],
  'updated_at', ARGV[8], 'heartbeat_ms', now)
return {'leased', tostring(attempt)}
