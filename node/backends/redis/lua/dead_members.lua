
local node = ARGV[2]
if redis.call('GET', settling(node)) ~= ARGV[3] then return {0} end
redis.call('PEXPIRE', settling(node), ARGV[4])
local page = {1}
for _, field in ipairs(redis.call('HRANDFIELD', node_members(node), ARGV[5])) do
  page[#page + 1] = field
end
return page
