-- The run's agent takes instructions (SPEC 16). KEYS: job. ARGV: prefix, group, runner, attempt.
if not holds(KEYS[1], ARGV[3], ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'steerable', ARGV[4])
return 1
