-- Steering (SPEC 16). KEYS: job hash, steer list, steered-from set
-- ARGV: provisional job id, entry json
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return 2
end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
if not redis.call('HGET', KEYS[1], 'steerable') then
  return 0
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
