-- The atomic commit: checks, idempotency, index allocation, series state, append, cursor
-- map, and the PUBLISH to subscribers, all in one script so every server process sees one
-- order.
--
-- KEYS: 1 task, 2 taskStatus, 3 taskRevision, 4 idx, 5 events, 6 seriesState, 7 seriesMeta,
--       8 idem, 9 eventIdx, 10 archivePending zset
-- ARGV: 1 mode ('events' | 'transition'), 2 channel, 3 expected revision, 4 new task JSON,
--       5 new status, 6 number of drafts, then 8 values per draft:
--       '=' .. idempotency key or '', event id, '=' .. series id or '', series mode,
--       p1, p2, data JSON, p3  (event JSON = p1 .. index .. p2 .. data .. p3),
--       then the time (ms) and the task id
--
-- A commit that writes anything records the task in archivePending (unless it is there
-- already, with an older time): the archive gap check compares such tasks with the archive.
--
-- Event JSON is built by Python and only spliced here, so `data` is never re-encoded by
-- cjson (which would turn {} into [] ambiguity, round big numbers and reorder keys).
-- Accumulated values are not computed here: an accumulate delta is stored and published as
-- itself (subscribers that want accumulated values compute them from the ordered deltas).
-- Returns {'ok', then per draft: 'new', index | 'dup', stored event JSON}
--      or {'notfound'} | {'stale'} | {'terminal', status}, having written nothing.

local TERMINAL = { completed = true, failed = true, timeout = true, cancelled = true }
local mode = ARGV[1]

if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'notfound' }
end
if mode == 'transition' then
  local revision = redis.call('GET', KEYS[3]) or '0'
  if revision ~= ARGV[3] then
    return { 'stale' }
  end
else
  local status = redis.call('GET', KEYS[2])
  if not status then
    status = cjson.decode(redis.call('GET', KEYS[1]))['status']
  end
  if TERMINAL[status] then
    return { 'terminal', status }
  end
end

local next_index = tonumber(redis.call('GET', KEYS[4]) or '0')
local first_index = next_index
local out = { 'ok' }
local by_key = {}
local states = {}     -- series id -> { mode, index, json } (this batch's newest)
local stored = {}     -- series id -> the stored state as loaded, or false
local replaced = {}   -- series id -> index of the entry this batch replaces
local appends = {}    -- { sid, mode, json } in index order
local messages = { '[' } -- pieces of the PUBLISH payload, joined once
local cursor_args = {}
local idem_args = {}
local state_args = {}
local meta_args = {}
local touched = {}

-- The stored state of a series ({ mode, index, json } or nil), read once per script. Its
-- JSON is read only for a `latest` state, the one entry removed by value.
local function load_state(sid)
  local cached = stored[sid]
  if cached == nil then
    cached = false
    local meta = redis.call('HGET', KEYS[7], sid)
    if meta then
      -- "<mode> <index>"; metas written by earlier versions go on after the index
      -- (" <start> <length> <field>"), which is ignored.
      local smode, sindex = string.match(meta, '^(%S+) (%d+)')
      cached = { mode = smode, index = tonumber(sindex) }
      if smode == 'latest' then
        cached.json = redis.call('HGET', KEYS[6], sid)
      end
    end
    stored[sid] = cached
  end
  return cached or nil
end

local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local b = 7 + i * 8
  local key, id, sid, smode = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local p1, p2, data, p3 = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  -- Keys and series ids arrive as '=' .. value ('' when absent) so an empty one still counts.
  local has_key, has_series = key ~= '', sid ~= ''
  key, sid = string.sub(key, 2), string.sub(sid, 2)
  local existing = nil
  if has_key then
    existing = by_key[key] or redis.call('HGET', KEYS[8], key)
  end
  if existing then
    out[#out + 1] = 'dup'
    out[#out + 1] = existing
  else
    local index = next_index
    next_index = next_index + 1
    local istr = string.format('%d', index)
    local event = p1 .. istr .. p2 .. data .. p3
    if has_series and (smode == 'accumulate' or smode == 'latest') then
      if smode == 'accumulate' then
        -- The state of an accumulate series is its newest delta: later commits only need
        -- its mode and index.
        states[sid] = { mode = 'accumulate', index = index, json = event }
      else
        local previous = states[sid] or load_state(sid)
        if previous and replaced[sid] == nil then
          replaced[sid] = previous.index
        end
        -- An earlier entry of this batch for the same series is superseded too.
        for j = #appends, 1, -1 do
          if appends[j].sid == sid and appends[j].mode == 'latest' then
            table.remove(appends, j)
          end
        end
        states[sid] = { mode = 'latest', index = index, json = event }
      end
      touched[sid] = true
    end
    appends[#appends + 1] = { sid = sid, mode = smode, json = event }
    if #messages > 1 then
      messages[#messages + 1] = ','
    end
    messages[#messages + 1] = event
    cursor_args[#cursor_args + 1] = id
    cursor_args[#cursor_args + 1] = istr
    if has_key then
      by_key[key] = event
      idem_args[#idem_args + 1] = key
      idem_args[#idem_args + 1] = event
    end
    out[#out + 1] = 'new'
    out[#out + 1] = istr
  end
end

-- Every check passed: write.
if mode == 'transition' or #messages > 1 then
  local tail = 7 + n * 8
  redis.call('ZADD', KEYS[10], 'NX', ARGV[tail], ARGV[tail + 1])
end
if mode == 'transition' then
  redis.call('SET', KEYS[1], ARGV[4])
  redis.call('SET', KEYS[2], ARGV[5])
  redis.call('INCR', KEYS[3])
end
if #messages == 1 then
  return out
end
for sid, index in pairs(replaced) do
  if index < first_index then
    local previous = stored[sid]
    if previous and previous.mode == 'latest' and previous.index == index then
      -- A latest entry is usually near the tail: search from there.
      redis.call('LREM', KEYS[5], -1, previous.json)
    else
      local pos, len = position_after(KEYS[5], KEYS[4], index - 1)
      if pos < len and index_at(KEYS[5], pos) == index then
        redis.call('LREM', KEYS[5], 1, redis.call('LINDEX', KEYS[5], pos))
      end
    end
  end
end
local chunk = {}
for j = 1, #appends do
  chunk[#chunk + 1] = appends[j].json
  if #chunk == 500 then
    redis.call('RPUSH', KEYS[5], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('RPUSH', KEYS[5], unpack(chunk))
end
for sid, _ in pairs(touched) do
  local state = states[sid]
  state_args[#state_args + 1] = sid
  state_args[#state_args + 1] = state.json
  meta_args[#meta_args + 1] = sid
  meta_args[#meta_args + 1] = state.mode .. ' ' .. string.format('%d', state.index)
end
if #state_args > 0 then
  redis.call('HSET', KEYS[6], unpack(state_args))
  redis.call('HSET', KEYS[7], unpack(meta_args))
end
local function hset_chunked(hkey, args)
  local j = 1
  while j <= #args do
    redis.call('HSET', hkey, unpack(args, j, math.min(j + 999, #args)))
    j = j + 1000
  end
end
hset_chunked(KEYS[9], cursor_args)
if #idem_args > 0 then
  hset_chunked(KEYS[8], idem_args)
end
redis.call('SET', KEYS[4], string.format('%d', next_index))
messages[#messages + 1] = ']'
redis.call('PUBLISH', ARGV[2], table.concat(messages))
return out
