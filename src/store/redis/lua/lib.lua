-- Shared by every queue script (prepended to each). ARGV[1] is always the key prefix,
-- ARGV[2] the runners' consumer group.
local prefix = ARGV[1]
local group = ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function job_key(id)
  return prefix .. 'job:{' .. id .. '}'
end

local function is_final(status)
  return status ~= 'queued' and status ~= 'running'
end

-- Acknowledge and delete a stream entry (whoever holds it).
local function drop(stream, entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

-- Takes the job out of the stream: its entry (if any) is dropped and forgotten.
local function unlist(stream, key)
  local entry = redis.call('HGET', key, 'entry')
  if entry then drop(stream, entry) end
  redis.call('HDEL', key, 'entry')
end

-- Appends the job to the stream unless it has an entry already (a job is in the
-- stream at most once at a time); records the entry on the job.
local function enqueue(stream, id, now)
  local key = job_key(id)
  local current = redis.call('HGET', key, 'entry')
  if current and #redis.call('XRANGE', stream, current, current) > 0 then
    return current
  end
  local entry = redis.call('XADD', stream, '*', 'job', id)
  redis.call('HSET', key, 'entry', entry, 'queued_ms', now)
  redis.call('HDEL', key, 'waiting')
  return entry
end

-- Moves waiting jobs into the stream while their gate has room, reserving a slot for
-- each; jobs that ended while they waited are skipped.
local function promote(stream, wait, run, limit, index, now, lease)
  redis.call('ZREMRANGEBYSCORE', run, '-inf', now)
  local started = 0
  while redis.call('ZCARD', run) < limit do
    local id = redis.call('LPOP', wait)
    if not id then break end
    local status = redis.call('HGET', job_key(id), 'status')
    if status and not is_final(status) then
      redis.call('ZADD', run, now + lease, id)
      enqueue(stream, id, now)
      started = started + 1
    end
  end
  if redis.call('LLEN', wait) == 0 then redis.call('HDEL', index, wait) end
  return started
end

-- The run's fence: the job is running under this runner and attempt.
local function holds(key, runner, attempt)
  local f = redis.call('HMGET', key, 'status', 'runner', 'attempt')
  return f[1] == 'running' and f[2] == runner and f[3] == attempt
end
