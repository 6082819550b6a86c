-- Intake. KEYS: delivery, intake stream, [job hash, index sorted sets...]
-- ARGV: dedup flag, ttl s, task json, score, job id, field/value pairs...
if ARGV[1] == '1' then
  if not redis.call('SET', KEYS[1], ARGV[5], 'NX', 'EX', ARGV[2]) then
    return 0
  end
end
if #KEYS > 2 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 6))
  for i = 4, #KEYS do
    redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5])
  end
end
redis.call('XADD', KEYS[2], '*', 'task', ARGV[3])
return 1
