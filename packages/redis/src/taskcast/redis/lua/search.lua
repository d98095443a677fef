-- Shared helpers, prepended to the scripts that need them (see _scripts.py).
--
-- The events list is in index order but may lack the indexes of replaced `latest` entries.
-- With `allocated` indexes handed out and `len` entries left, `removed = allocated - len`,
-- and the entry at position p has an index in [p, p + removed]. So the first position whose
-- index is above `after` lies in [after + 1 - removed, after + 1]: found directly when
-- nothing was removed, by a binary search over that window otherwise.

local function index_at(events_key, pos)
  local entry = redis.call('LINDEX', events_key, pos)
  -- Event JSON starts {"id":...,"taskId":...,"index":N; inside JSON strings a quote is
  -- escaped, so the first `"index":` is always the top-level key.
  return tonumber(string.match(entry, '"index":(%d+)'))
end

local function position_after(events_key, idx_key, after)
  local len = redis.call('LLEN', events_key)
  if after < 0 or len == 0 then
    return 0, len
  end
  local allocated = tonumber(redis.call('GET', idx_key) or '0')
  local removed = allocated - len
  if removed < 0 then
    removed = 0
  end
  local lo = after + 1 - removed
  if lo < 0 then
    lo = 0
  end
  local hi = after + 1
  if hi > len then
    hi = len
  end
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if index_at(events_key, mid) > after then
      hi = mid
    else
      lo = mid + 1
    end
  end
  return lo, len
end
