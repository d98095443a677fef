-- Release a task from the hot store (it is archived): delete all of its keys, but only if
-- nothing was written since the caller checked the archive.
-- KEYS: 1..9 the task's keys (task, status, revision, idx, ...), 10 tasks set,
--       11 tasksByCreated zset, 12 archivePending zset (optional: the archive holds the task)
-- ARGV: 1 expected revision, 2 expected next index (last index + 1), 3 task id
-- Returns 1 if released, 0 (having deleted nothing) otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[1] then
  return 0
end
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
redis.call('SREM', KEYS[10], ARGV[3])
redis.call('ZREM', KEYS[11], ARGV[3])
if KEYS[12] then
  redis.call('ZREM', KEYS[12], ARGV[3])
end
return 1
