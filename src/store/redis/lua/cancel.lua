-- KEYS: job, stream, active set. ARGV: prefix, group, job id, now (RFC 3339).
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if not status or is_final(status) then return 'final' end
if status == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1', 'updated_at', ARGV[4])
  return 'requested'
end
redis.call('HSET', key, 'status', 'cancelled', 'cancel_requested', '1',
  'updated_at', ARGV[4], 'finished_at', ARGV[4])
unlist(KEYS[2], key)
redis.call('ZREM', KEYS[3], ARGV[3])
return 'cancelled'
