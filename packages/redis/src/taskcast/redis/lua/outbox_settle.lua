-- Webhook outbox: record an outcome, only for the holder of the current lease.
-- KEYS: delivery hash, due zset, finished zset
-- ARGV: id, lease, new storage JSON, status, next attempt (ms), finished at (ms)
if ARGV[2] == '' or redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'lease', '', 'next', ARGV[5])
if ARGV[4] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
end
return 1
