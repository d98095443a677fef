-- Webhook outbox: lease up to ARGV[2] due deliveries.
-- KEYS[1] due zset
-- ARGV: now, limit, lease expiry (ms), lease token base, delivery hash key prefix
-- Returns a flat list: storage JSON, lease token, ... (earliest due first; equal times by id).
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i, id in ipairs(ids) do
  local hash = ARGV[5] .. id
  local data = redis.call('HGET', hash, 'data')
  if data then
    local lease = ARGV[4] .. ':' .. i
    redis.call('HSET', hash, 'lease', lease, 'next', ARGV[3])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    out[#out + 1] = data
    out[#out + 1] = lease
  else
    -- A purged or foreign member: drop it from the schedule.
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
