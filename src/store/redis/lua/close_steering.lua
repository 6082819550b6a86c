-- The agent would end (SPEC 16). KEYS: job, steer list.
-- ARGV: prefix, group, runner, attempt, entries seen.
-- Lease lost: nil. New entries: them (steering stays open). None: {} and it closes.
if not holds(KEYS[1], ARGV[3], ARGV[4]) then return false end
if redis.call('LLEN', KEYS[2]) > tonumber(ARGV[5]) then
  return redis.call('LRANGE', KEYS[2], ARGV[5], -1)
end
redis.call('HDEL', KEYS[1], 'steerable')
return {}
