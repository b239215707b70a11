
local node = ARGV[2]
for i = 3, #ARGV do
  if redis.call('HINCRBY', name_key(ARGV[i]), node, -1) <= 0 then drop_name(ARGV[i], node) end
end
return 1
