
local node = ARGV[2]
if redis.call('GET', settling(node)) ~= ARGV[3] then return {0} end
redis.call('PEXPIRE', settling(node), ARGV[4])
local scan = redis.call('HSCAN', node_members(node), ARGV[5], 'COUNT', ARGV[6])
local page = {1, scan[1]}
for i = 1, #scan[2], 2 do page[#page + 1] = scan[2][i] end
return page
