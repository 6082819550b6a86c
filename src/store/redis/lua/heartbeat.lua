-- KEYS: job, stream, user run, thread run. ARGV: prefix, group, runner, attempt, slot lease ms, job id.
local key = KEYS[1]
if not holds(key, ARGV[3], ARGV[4]) then return 0 end
local now = now_ms()
local entry = redis.call('HGET', key, 'entry')
if entry then
  redis.call('XCLAIM', KEYS[2], group, ARGV[3], 0, entry, 'JUSTID')
end
redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[5]), ARGV[6])
redis.call('ZADD', KEYS[4], 'XX', now + tonumber(ARGV[5]), ARGV[6])
redis.call('HSET', key, 'heartbeat_ms', now)
return 1
