-- Claim tasks whose oldest unarchived write is older than a cutoff, for the archive gap
-- check: each claimed task gets a lease key, so processes do not check it at once.
-- KEYS: 1 archivePending zset
-- ARGV: 1 cutoff (ms), 2 limit, 3 lease (ms), 4 lease key prefix, 5 lease token
-- Returns { task id, since (ms), ... } of the claimed tasks, oldest first.
local limit = tonumber(ARGV[2])
-- Some of the oldest may be leased by another process: look a little further.
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
  limit * 4)
local out = {}
for i = 1, #found, 2 do
  if redis.call('SET', ARGV[4] .. found[i], ARGV[5], 'NX', 'PX', ARGV[3]) then
    out[#out + 1] = found[i]
    out[#out + 1] = found[i + 1]
    if #out >= limit * 2 then
      break
    end
  end
end
return out
