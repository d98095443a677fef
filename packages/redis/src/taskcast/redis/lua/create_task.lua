-- Create a task unless its id exists (SET NX semantics, plus the listing indexes).
-- KEYS: 1 task, 2 status, 3 tasks set, 4 tasksByCreated zset, 5 archivePending zset
-- ARGV: 1 task JSON, 2 status, 3 createdAt, 4 task id
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
-- Not archived yet (see commit.lua); an older record of a deleted namesake is kept.
redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[4])
return 1
