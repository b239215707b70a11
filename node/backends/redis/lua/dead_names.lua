
local node = ARGV[2]
if redis.call('GET', settling(node)) ~= ARGV[3] then return -1 end
redis.call('PEXPIRE', settling(node), ARGV[4])
for _, form in ipairs(redis.call('SPOP', node_names(node), ARGV[5])) do drop_name(form, node) end
return redis.call('SCARD', node_names(node))
