-- Ends a run (final status, or handed back when the fields say `queued`).
-- KEYS: stream, user run, user wait, thread run, thread wait, wait index, job, active set.
-- ARGV: prefix, group, runner, attempt, job id, user limit, slot lease ms, now (RFC 3339),
--       field/values...
local stream, key, id = KEYS[1], KEYS[7], ARGV[5]
if not holds(key, ARGV[3], ARGV[4]) then return 0 end
local now = now_ms()
local lease = tonumber(ARGV[7])
redis.call('HSET', key, 'updated_at', ARGV[8], unpack(ARGV, 9))
unlist(stream, key)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[4], id)
if redis.call('HGET', key, 'status') == 'queued' then
  enqueue(stream, id, now)
else
  redis.call('ZREM', KEYS[8], id)
end
promote(stream, KEYS[3], KEYS[2], tonumber(ARGV[6]), KEYS[6], now, lease)
promote(stream, KEYS[5], KEYS[4], 1, KEYS[6], now, lease)
return 1
