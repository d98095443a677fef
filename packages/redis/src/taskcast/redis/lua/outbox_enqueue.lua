-- Webhook outbox: store new deliveries (an existing id is left untouched).
-- KEYS[1]        due zset (delivery id -> next attempt, ms)
-- KEYS[2i], KEYS[2i+1]  delivery i's hash and its task's index zset
-- ARGV[4(i-1)+1..4]     delivery i: id, next attempt, created at, storage JSON
local n = (#KEYS - 1) / 2
local added = 0
for i = 1, n do
  local hash, index = KEYS[2 * i], KEYS[2 * i + 1]
  local b = (i - 1) * 4
  local id = ARGV[b + 1]
  if redis.call('EXISTS', hash) == 0 then
    redis.call('HSET', hash, 'data', ARGV[b + 4], 'lease', '', 'next', ARGV[b + 2])
    redis.call('ZADD', KEYS[1], ARGV[b + 2], id)
    redis.call('ZADD', index, ARGV[b + 3], id)
    added = added + 1
  end
end
return added
