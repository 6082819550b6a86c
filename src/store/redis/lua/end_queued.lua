-- KEYS: job, jobs stream, active set. ARGV: prefix, group, job id, now, field/values...
local key = KEYS[1]
if redis.call('HGET', key, 'status') ~= 'queued' then return 0 end
redis.call('HSET', key, 'updated_at', ARGV[4], 'finished_at', ARGV[4], unpack(ARGV, 5))
unlist(KEYS[2], key)
redis.call('ZREM', KEYS[3], ARGV[3])
return 1
