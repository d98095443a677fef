-- End an archive gap check's claim of a task, and release its lease.
-- KEYS: 1 archivePending zset, 2 the task's lease key, 3 task, 4 taskRevision, 5 idx
-- ARGV: 1 task id, 2 mode ('confirm' | 'defer'), 3 time (ms),
--       4 expected revision, 5 expected next index
-- confirm: the archive held everything as of the expected revision and next index: remove
--          the record if they are unchanged or the task is gone; otherwise a commit came
--          after the check, so the record's time becomes the check's time (ARGV 3).
-- defer:   only recent writes were missing: the record's time becomes ARGV 3.
-- Returns 1 if the record was removed, 0 otherwise.
redis.call('DEL', KEYS[2])
if ARGV[2] == 'confirm' then
  if redis.call('EXISTS', KEYS[3]) == 0 or (
      (redis.call('GET', KEYS[4]) or '0') == ARGV[4]
      and (redis.call('GET', KEYS[5]) or '0') == ARGV[5]) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
  end
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 0
