-- KEYS: stream, wait index. ARGV: prefix, group, slot lease ms.
local now = now_ms()
local started = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local run, limit = string.match(entries[i + 1], '^(.*)\n(%d+)$')
  if run then
    started = started + promote(KEYS[1], entries[i], run, tonumber(limit), KEYS[2], now, tonumber(ARGV[3]))
  end
end
return started
