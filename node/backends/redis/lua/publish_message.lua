
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000 > tonumber(ARGV[9]) then return -1 end
-- A sender muted in the room (KEYS[8], while it lives): nothing is done.
if redis.call('EXISTS', KEYS[8]) == 1 then return -2 end
-- A sender's idempotency key (KEYS[7], when ARGV[11] gives its window in ms) stored before:
-- nothing is done, the first message's seq is the answer (negated: -3 - seq).
if ARGV[11] ~= '' then
  local first = redis.call('GET', KEYS[7])
  if first then return -3 - tonumber(first) end
end
local myid, term = false, false
if ARGV[6] == 'SPUBLISH' then
  myid, term = redis.call('CLUSTER', 'MYID'), redis.call('GET', KEYS[5])
end
local function promoted()
  local since = string.match(redis.call('INFO', 'replication'), 'master_replid2:(%x+)')
  return since ~= nil and string.find(since, '[^0]') ~= nil
end
local epoch = redis.call('GET', KEYS[3])
local seq = redis.call('INCR', KEYS[1])
if term and term ~= myid and epoch and promoted() then
  redis.call('SET', KEYS[6], epoch)
  epoch = ARGV[5] .. '.' .. string.format('%d', seq - 1)
  redis.call('SET', KEYS[3], epoch)
elseif seq <= tonumber(ARGV[7]) and (not epoch or epoch == ARGV[10]) then
  seq = tonumber(ARGV[7]) + 1
  epoch = ARGV[5] .. '.' .. string.format('%d', seq - 1)
  redis.call('SET', KEYS[1], seq)
  redis.call('SET', KEYS[3], epoch)
  redis.call('SET', KEYS[6], ARGV[10])
  redis.call('DEL', KEYS[2])
elseif not epoch then  -- a new room (or one whose history was lost whole: base 0)
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
if myid and term ~= myid then redis.call('SET', KEYS[5], myid) end
local payload = close({ARGV[1]}, {seq})
redis.call('ZADD', KEYS[2], seq, payload)
local count = redis.call('ZCARD', KEYS[2])
local size = #payload  -- alone in the history (new, or lost): its size is the total
if count > 1 then size = size + tonumber(redis.call('GET', KEYS[4]) or '0') end
local most, most_bytes = tonumber(ARGV[2]), tonumber(ARGV[8])
while count > most or (size > most_bytes and count > 1) do
  size = size - #redis.call('ZPOPMIN', KEYS[2])[1]
  count = count - 1
end
redis.call('SET', KEYS[4], size, 'KEEPTTL')
if ARGV[11] ~= '' then redis.call('SET', KEYS[7], seq, 'PX', ARGV[11]) end
redis.call(ARGV[6], ARGV[3], envelope(ARGV[4], seq, '', payload, 0, epoch))
-- Queued for the webhooks (KEYS[9], when they want messages), in the room's order.
if KEYS[9] then redis.call('XADD', KEYS[9], '*', 'p', payload) end
return seq
