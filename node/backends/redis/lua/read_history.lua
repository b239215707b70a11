
redis.call('SET', KEYS[3], ARGV[5], 'NX')
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local first = tonumber(oldest[2] or (last + 1))
local low = ARGV[2] ~= '' and '(' .. ARGV[2] or '-inf'
local high = ARGV[3] ~= '' and '(' .. ARGV[3] or '+inf'
local found = redis.call('ZREVRANGEBYSCORE', KEYS[2], high, low, 'WITHSCORES', 'LIMIT', 0,
                         tonumber(ARGV[1]))
local most = ARGV[4] ~= '' and tonumber(ARGV[4]) or math.huge
local taken, size, from = 0, 0, nil
for i = 1, #found, 2 do
  size = size + #found[i]
  if size > most and taken > 0 then break end
  taken, from = taken + 1, tonumber(found[i + 1])
end
local messages = {}
for i = taken, 1, -1 do table.insert(messages, found[2 * i - 1]) end
return {redis.call('GET', KEYS[3]), last, first, (from and from > first) and 1 or 0, messages,
        redis.call('GET', KEYS[4])}
