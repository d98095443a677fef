-- Read a page of stored events after an index.
-- KEYS: 1 events list, 2 idx counter
-- ARGV: 1 after index (-1: from the start), 2 page size
local start, len = position_after(KEYS[1], KEYS[2], tonumber(ARGV[1]))
if start >= len then
  return {}
end
return redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
