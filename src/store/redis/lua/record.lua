-- KEYS: job. ARGV: prefix, group, runner, attempt, now (RFC 3339), field/values...
local key = KEYS[1]
if not holds(key, ARGV[3], ARGV[4]) then return 0 end
redis.call('HSET', key, 'updated_at', ARGV[5], unpack(ARGV, 6))
return 1
