-- The atomic commit: checks, idempotency, index allocation, series merge, append, cursor map,
-- and the PUBLISH to subscribers, all in one script so every server process sees one order.
--
-- KEYS: 1 task, 2 taskStatus, 3 taskRevision, 4 idx, 5 events, 6 seriesState, 7 seriesMeta,
--       8 idem, 9 eventIdx
-- ARGV: 1 mode ('events' | 'transition'), 2 channel, 3 expected revision, 4 new task JSON,
--       5 new status, 6 number of drafts, then 12 values per draft:
--       '=' .. idempotency key or '', event id, '=' .. series id or '', series mode,
--       accumulate field,
--       p1, p2, data JSON, p3  (event JSON = p1 .. index .. p2 .. data .. p3),
--       acc pre, acc literal, acc post  (data JSON = pre .. literal .. post when data is an
--       object holding a string at the accumulate field; all '' otherwise)
--
-- Event JSON is built by Python and only spliced here, so `data` is never re-encoded by
-- cjson (which would turn {} into [] ambiguity, round big numbers and reorder keys).
-- Returns {'ok', then per draft: 'new', index, the series' new state JSON when the delta
--                                 was appended to an accumulated text, else ''
--                                 | 'dup', stored event JSON, ''}
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

-- The accumulated string at `field` of a stored or in-batch accumulate state, if any.
local function state_string(state_json, field)
  local ok, decoded = pcall(cjson.decode, state_json)
  if not ok or type(decoded) ~= 'table' then
    return nil
  end
  local data = decoded['data']
  if type(data) ~= 'table' then
    return nil
  end
  local value = data[field]
  if type(value) == 'string' then
    return value
  end
  return nil
end

-- The JSON string literal at `field` of an accumulate state without its closing quote, if
-- the state holds a string there. Cut out of the stored JSON where the state recorded its
-- position (states written before positions were recorded are decoded). Every long string
-- a script makes costs ~1 us per KB here, so a long accumulated text is never decoded,
-- re-encoded or copied more than the few times it must be.
local function literal_open(state, field)
  if state.lit_start and state.lit_field == field then
    return string.sub(state.json, state.lit_start, state.lit_start + state.lit_len - 2)
  end
  local before = state_string(state.json, field)
  if before then
    return string.sub(cjson.encode(before), 1, -2)
  end
  return nil
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

local function load_state(sid)
  local cached = stored[sid]
  if cached == nil then
    cached = false
    local meta = redis.call('HGET', KEYS[7], sid)
    if meta then
      local smode, sindex, rest = string.match(meta, '^(%S+) (%d+)(.*)$')
      cached = { mode = smode, index = tonumber(sindex), json = redis.call('HGET', KEYS[6], sid) }
      -- An accumulate state may say where its string literal sits ("start length field").
      local lstart, llen, lfield = string.match(rest, '^ (%d+) (%d+) (.*)$')
      if lstart then
        cached.lit_start, cached.lit_len, cached.lit_field = tonumber(lstart), tonumber(llen), lfield
      end
    end
    stored[sid] = cached
  end
  return cached or nil
end

local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local b = 7 + i * 12
  local key, id, sid, smode, field = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local p1, p2, data, p3 = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local pre, literal, post = ARGV[b + 9], ARGV[b + 10], ARGV[b + 11]
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
    out[#out + 1] = ''
  else
    local index = next_index
    next_index = next_index + 1
    local istr = string.format('%d', index)
    local event = p1 .. istr .. p2 .. data .. p3
    local message = nil -- the PUBLISH pieces of an accumulate delta (else the event itself)
    local merged = ''
    if has_series and (smode == 'accumulate' or smode == 'latest') then
      local previous = states[sid] or load_state(sid)
      if smode == 'accumulate' then
        if previous and previous.mode ~= 'accumulate' then
          previous = nil
        end
        local acc = { data }
        local state = { mode = 'accumulate', index = index, json = event }
        local before = nil
        if previous and literal ~= '' then
          before = literal_open(previous, field)
        end
        if before then
          -- Two JSON string literals join by dropping the quotes between them.
          local tail = string.sub(literal, 2)
          acc = { pre, before, tail, post }
          state.json = p1 .. istr .. p2 .. pre .. before .. tail .. post .. p3
          state.lit_len = #before + #tail
          merged = state.json
        elseif literal ~= '' then
          state.lit_len = #literal
        end
        if state.lit_len then
          state.lit_start = #p1 + #istr + #p2 + #pre + 1
          state.lit_field = field
        end
        states[sid] = state
        message = { string.sub(event, 1, -2), ',"_accumulatedData":' }
        for j = 1, #acc do
          message[#message + 1] = acc[j]
        end
        message[#message + 1] = '}'
      else
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
    if message then
      for j = 1, #message do
        messages[#messages + 1] = message[j]
      end
    else
      messages[#messages + 1] = event
    end
    cursor_args[#cursor_args + 1] = id
    cursor_args[#cursor_args + 1] = istr
    if has_key then
      by_key[key] = event
      idem_args[#idem_args + 1] = key
      idem_args[#idem_args + 1] = event
    end
    out[#out + 1] = 'new'
    out[#out + 1] = istr
    out[#out + 1] = merged
  end
end

-- Every check passed: write.
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
  local meta = state.mode .. ' ' .. string.format('%d', state.index)
  if state.lit_start then
    meta = meta .. ' ' .. string.format('%d %d ', state.lit_start, state.lit_len) .. state.lit_field
  end
  meta_args[#meta_args + 1] = meta
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
