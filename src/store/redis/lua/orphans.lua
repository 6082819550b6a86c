-- The orphan reconciler. KEYS: stream, active set, lock.
-- ARGV: prefix, group, older than ms, lock ms, holder.
if not redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[4]) then return -1 end
local now = now_ms()
local older = tonumber(ARGV[3])
local requeued = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, 999)) do
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'status', 'entry', 'waiting', 'dispatched_at',
    'queued_ms', 'heartbeat_ms')
  local status = f[1]
  if not status or is_final(status) then
    redis.call('ZREM', KEYS[2], id)
  elseif f[4] and not f[3] then
    local listed = f[2] and #redis.call('XRANGE', KEYS[1], f[2], f[2]) > 0
    local seen = math.max(tonumber(f[5] or '0'), tonumber(f[6] or '0'))
    if not listed and now - seen > older then
      redis.call('HDEL', key, 'entry')
      enqueue(KEYS[1], id, now)
      requeued = requeued + 1
    end
  end
end
return requeued
