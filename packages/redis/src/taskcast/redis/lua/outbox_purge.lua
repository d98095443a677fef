-- Webhook outbox: delete up to ARGV[2] deliveries finished before ARGV[1].
-- KEYS[1] finished zset
-- ARGV: before (ms), limit, delivery hash key prefix, task index key prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local hash = ARGV[3] .. id
  local data = redis.call('HGET', hash, 'data')
  if data then
    local task_id = cjson.decode(data)['taskId']
    redis.call('ZREM', ARGV[4] .. task_id, id)
    redis.call('DEL', hash)
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
