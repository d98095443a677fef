-- A page of the listing zset after a (createdAt, id) keyset position.
-- KEYS: 1 tasksByCreated zset (score createdAt; equal scores are ordered by id bytes)
-- ARGV: 1 after createdAt ('' for the start), 2 after id, 3 page size
-- When the `after` member is gone, the page starts at its score and the caller drops the
-- members at or before it (Lua string comparison follows the server locale, so it is not
-- used here).
local start = 0
if ARGV[1] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    start = redis.call('ZRANK', KEYS[1], ARGV[2]) + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
  end
end
return redis.call('ZRANGE', KEYS[1], start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
