
prune(now_ms())
local first = tonumber(ARGV[2])
local page = {redis.call('ZCARD', ROOMS)}
for _, name in ipairs(redis.call('ZRANGE', ROOMS, first, first + tonumber(ARGV[3]) - 1)) do
  table.insert(page, name)
end
return page
