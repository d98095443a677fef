-- Remove a task and everything stored for it.
-- KEYS: 1..9 the task's keys (task first), 10 tasks set, 11 tasksByCreated zset,
--       12 archivePending zset (optional)
-- ARGV: 1 task id
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
redis.call('SREM', KEYS[10], ARGV[1])
redis.call('ZREM', KEYS[11], ARGV[1])
if KEYS[12] then
  redis.call('ZREM', KEYS[12], ARGV[1])
end
return existed
