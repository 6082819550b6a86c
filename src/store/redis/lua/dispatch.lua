-- KEYS: job, jobs stream. ARGV: prefix, group, job id, now (RFC 3339).
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if not status or status ~= 'queued' then return 'not_queued' end
if redis.call('HEXISTS', key, 'dispatched_at') == 1 then return 'already' end
local now = now_ms()
redis.call('HSET', key, 'dispatched_at', ARGV[4], 'updated_at', ARGV[4])
enqueue(KEYS[2], ARGV[3], now)
return 'dispatched'
