-- Bring a released task back from the archive, atomically and only if it is absent
-- (SET NX semantics: of processes racing to restore the same task, one writes).
-- KEYS: 1..9 the task's keys (task, status, revision, idx, events, seriesState, seriesMeta,
--       idem, eventIdx), 10 tasks set, 11 tasksByCreated zset, 12 archivePending zset
-- ARGV: 1 task JSON, 2 status, 3 revision, 4 next index, 5 createdAt, 6 task id,
--       7 number of events E, 8 number of series S, 9 number of idempotency keys K,
--       10 replace ('1': an existing task is replaced, as an archive import with overwrite),
--       11 the time (ms) to record the task in archivePending, or '' (a task restored from
--       the archive is there already; an imported one is not until the archive writes it),
--       then E event JSONs (index order), E (event id, index) pairs,
--       S (series id, state JSON, meta) triples, K (key, event JSON) pairs.
-- Returns 1 if restored, 0 (having written nothing) if the task exists and replace is '0'.
if ARGV[10] == '1' then
  redis.call('SET', KEYS[1], ARGV[1])
elseif redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[10], ARGV[6])
redis.call('ZADD', KEYS[11], ARGV[5], ARGV[6])
if ARGV[11] ~= '' then
  redis.call('ZADD', KEYS[12], 'NX', ARGV[11], ARGV[6])
end
-- Whatever a previous life of this id left behind must not mix with the restored state.
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
local e, s, k = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local pos = 12
local function push_chunks(cmd, key, first, count, width)
  local j = first
  local last = first + count * width - 1
  while j <= last do
    local stop = math.min(j + 1000 * width - 1, last)
    redis.call(cmd, key, unpack(ARGV, j, stop))
    j = stop + 1
  end
end
if e > 0 then
  push_chunks('RPUSH', KEYS[5], pos, e, 1)
  pos = pos + e
  push_chunks('HSET', KEYS[9], pos, e, 2)
  pos = pos + 2 * e
end
for i = 0, s - 1 do
  local b = pos + i * 3
  redis.call('HSET', KEYS[6], ARGV[b], ARGV[b + 1])
  redis.call('HSET', KEYS[7], ARGV[b], ARGV[b + 2])
end
pos = pos + 3 * s
if k > 0 then
  push_chunks('HSET', KEYS[8], pos, k, 2)
end
return 1
